"""results/gpu_check.md: what ran where, and each check's numbers against its tolerance."""

from __future__ import annotations

import math
from pathlib import Path

from densehmr.gpu_check import forward
from densehmr.gpu_check.forward import ForwardResult
from densehmr.gpu_check.renderer import RenderResult
from densehmr.gpu_check.settings import CheckSettings
from densehmr.gpu_check.training import TrainResult


def _num(value: float, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _sci(value: float) -> str:
    return "—" if isinstance(value, float) and math.isnan(value) else f"{value:.1e}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def training_table(results: list[TrainResult], settings: CheckSettings) -> list[str]:
    lines = [
        f"## Training: `experiment=paper_<method>`, {settings.steps} steps, `{settings.precision}`, DDP on one device",
        "",
        "| method | backbone | crop (H×W) | batch | steps | steps/s | images/s | peak memory (MB) | last loss | "
        "wall (s) | ran as | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        images = r.steps_per_s * r.batch_size if r.batch_size else math.nan
        crop = f"{r.image_size[0]}×{r.image_size[1]}" if r.batch_size else "—"
        status = r.status if r.ok else f"{r.status.upper()}: {r.error}" if r.error else r.status.upper()
        lines.append(
            f"| {r.method} | {r.backbone or '—'} | {crop} | {r.batch_size or '—'} | {r.steps} | "
            f"{_num(r.steps_per_s)} | {_num(images, 1)} | {_num(r.peak_memory_mb, 0)} | {_num(r.final_loss, 3)} | "
            f"{_num(r.seconds, 1)} | {r.strategy or '—'} | {status} |"
        )
    memory = next((r.memory for r in results if r.memory), "")
    lines += ["", f"steps/s leaves out the first {settings.timing_skip} steps (all but the first in shorter runs); "
              f"memory: {memory or '—'}."]
    return lines


def forward_table(results: list[ForwardResult], settings: CheckSettings) -> list[str]:
    lines = [
        f"## Forward: CPU float32 vs {settings.device} float32 (TF32 off), same weights, batch of "
        f"{settings.forward_batch}",
        "",
        f"BatchNorm statistics set from the batch first (untrained networks). An output passes when the "
        f"{forward.QUANTILE:.1%} percentile of abs({settings.device} − CPU) over its elements is ≤ "
        f"{forward.FP32_REL_TOL:g} × max abs(CPU) (or ≤ {forward.FP32_ABS_FLOOR:g}); integer outputs must agree "
        f"on ≥ {forward.INT_AGREEMENT:.1%} of their elements. Mixed precision: the autocast forward's same "
        "percentile from the CPU float32 one, over max abs(CPU) (reported, not judged).",
        "",
        "| method | outputs | failing | worst output | its max abs diff | its percentile / max abs(CPU) | worst "
        "mixed-precision percentile / max abs(CPU) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.method} | — | — | — | — | — | — | FAIL: {r.error} |")
            continue
        worst = r.worst()
        failing = [o.name for o in r.outputs if not o.passed]
        amp = [o.amp_rel for o in r.outputs if not math.isnan(o.amp_rel)]
        lines.append(
            f"| {r.method} | {len(r.outputs)} | {', '.join(failing) or 'none'} | "
            f"{worst.name if worst else '—'} | {_sci(worst.max_abs) if worst else '—'} | "
            f"{_sci(worst.rel) if worst else '—'} | {_sci(max(amp)) if amp else '—'} | {verdict(r.ok)} |"
        )
    return lines


def renderer_table(result: RenderResult, settings: CheckSettings) -> list[str]:
    lines = [
        f"## Renderer: {settings.device} vs CPU, the open body at {settings.render_px}×{settings.render_px} px",
        "",
    ]
    if result.error:
        return [*lines, f"FAIL: {result.error}"]
    lines += ["| check | value | tolerance | status |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.value:.6g} | {c.tolerance} | {verdict(c.passed)} |" for c in result.checks]
    devices = list(dict.fromkeys(d for times in result.ms.values() for d in times))
    lines += ["", "| stage | " + " | ".join(f"{d} ms" for d in devices) + " |",
              "|---|" + "---|" * len(devices)]
    lines += [f"| {stage} | " + " | ".join(_num(times.get(d, math.nan), 2) for d in devices) + " |"
              for stage, times in result.ms.items()]
    return lines


def write_report(
    path: Path, settings: CheckSettings, environment: dict[str, str], train: list[TrainResult],
    forward_results: list[ForwardResult], render: RenderResult, seconds: float,
) -> Path:
    """Write the markdown report to `path` and return it."""
    ok = all(r.ok for r in train) and all(r.ok for r in forward_results) and render.ok
    title = "# GPU check" + (" — DRY RUN on the CPU at tiny sizes (no GPU involved)" if settings.dry_run else "")
    within = seconds <= settings.budget_s
    lines = [
        title,
        "",
        f"Written by `make gpu-check{' DRY_RUN=1' if settings.dry_run else ''}`. Verdict: **{verdict(ok)}**. "
        f"Wall time {seconds / 60:.1f} min ({'within' if within else 'OVER'} the {settings.budget_s / 60:.0f} min "
        "budget).",
        "",
        *(f"- {key}: {value}" for key, value in environment.items()),
        "",
        *training_table(train, settings),
        "",
        *forward_table(forward_results, settings),
        "",
        *renderer_table(render, settings),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path

