"""Writing a bench's results: results/bench.json (the figures) and results/bench.md (readable tables).

The results dict (what `densehmr.bench.run_bench` returns and bench.json holds):
  device:   machine description, torch threads, CUDA device or None, load average at start and end;
  settings: quick flag, backbones, per-method and per-stage settings;
  matmul_gflops: device type -> GFLOP/s of a large float32 matmul (the practical peak); "cpu_bf16" the
            same in bfloat16 where the CPU has it natively;
  methods:  method -> backbone -> {params, gflops, latency_ms_bs1, throughput_bs32, train_step_ms,
            peak_mem_mb, gflops_per_s, peak_fraction, variant, throughput_by_variant,
            [throughput_bs32_bf16, peak_fraction_bf16,] *_vs_pymaf, ...[, cuda: {the same on CUDA}]
            [, glibc_default: {the same keys measured without retained host memory}]};
  papers:   [{method, experiment, figures (the paper's reported speeds), missing, and the inference
            measurements above}];
  stages:   name -> {value, unit, ...};
  targets:  [{name, value, target, pass, op, unit[, note]}];
  notes:    what was skipped or failed, and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from densehmr.bench.papers import PaperFigure, figure_text
from densehmr.files import atomic_write_bytes

REQUIRED_KEYS = ("device", "methods", "stages", "targets")
METHOD_KEYS = ("params", "gflops", "latency_ms_bs1", "throughput_bs32", "train_step_ms", "peak_mem_mb")

NOISE_NOTE = (
    "These machines are shared and noisy: absolute timings move by tens of percent between runs, and by up "
    "to 10x when the load average exceeds the core count (torch's threads then wait for each other at every "
    "operation). Read the load average above; compare within one run (the ratios against PyMAF are measured "
    "in the same run, one model after the other); the fastest repeats (`*_min`, `*_max` in bench.json) are "
    "the least disturbed."
)


def write_json(results: Mapping, path: Path) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise KeyError(f"bench results lack {missing}")
    atomic_write_bytes(path, (json.dumps(results, indent=2, default=str) + "\n").encode())
    return path


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _load(load: list[float] | None) -> str:
    return "-" if not load else " / ".join(f"{x:.2f}" for x in load)


def machine_lines(device: Mapping) -> list[str]:
    cuda = device.get("cuda") or "none"
    return [
        "## Machine",
        "",
        f"- CPU: {device.get('cpu', '?')}, {device.get('cores', '?')} cores usable, "
        f"torch threads {device.get('threads', '?')} (OMP_WAIT_POLICY {device.get('omp_wait_policy', '?')}), "
        f"memory {_num(device.get('memory_gb'))} GB",
        f"- torch {device.get('torch', '?')}, CUDA: {cuda}",
        f"- load average (1 / 5 / 15 min): at start {_load(device.get('load_start'))}, "
        f"at end {_load(device.get('load_end'))}",
        f"- {NOISE_NOTE}",
    ]


def method_rows(methods: Mapping, part: str | None = None) -> list[list[str]]:
    """One row per (method, backbone); `part` = "cuda" reads each entry's CUDA measurements."""
    rows = []
    for method, per_backbone in methods.items():
        for backbone, entry in per_backbone.items():
            e = entry.get(part) if part else entry
            if not e:
                continue
            fraction = e.get("peak_fraction")
            variants = e.get("throughput_by_variant", {})
            rows.append(
                [
                    method,
                    backbone,
                    _num(e["params"] / 1e6, 2),
                    _num(e["gflops"], 2),
                    _num(e["latency_ms_bs1"]),
                    _num(e["throughput_bs32"]),
                    _num(e.get("throughput_vs_pymaf"), 2),
                    _num(e.get("speedup_bs1_vs_pymaf"), 2),
                    f"{_num(e['train_step_ms'])} (B{e.get('train_batch', '?')})",
                    _num(e["peak_mem_mb"], 0),
                    _num(e["gflops_per_s"]),
                    _num(e.get("matmul_gflops")),
                    _percent(fraction),
                    ", ".join(f"{k} {_num(v)}" for k, v in variants.items()) or "-",
                    _num(e.get("throughput_bs32_bf16")),
                    _percent(e.get("peak_fraction_bf16")),
                ]
            )
    return rows


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


METHOD_HEADER = [
    "method", "backbone", "params (M)", "GFLOPs / image", "latency B1 (ms)", "throughput B32 (img/s)",
    "x PyMAF throughput", "x PyMAF B1 speed", "train step (ms)", "peak mem (MB)", "GFLOP/s", "matmul GFLOP/s",
    "of matmul peak", "img/s of each variant", "bf16 img/s", "of bf16 matmul peak",
]


def methods_lines(results: Mapping) -> list[str]:
    methods = results.get("methods", {})
    matmul = results.get("matmul_gflops", {})
    n = results.get("settings", {}).get("method", {}).get("matmul_size", "?")
    size = next((e.get("image_size") for pb in methods.values() for e in pb.values()), None)
    crop = "x".join(map(str, size)) if size else "?"
    lines = [
        "## Methods",
        "",
        f"Networks as configured for training (configs/method, configs/backbone), crops {crop}. Latency: "
        "median ms of one image; throughput: images/s of batched forwards (batch in bench.json, "
        "`throughput_batch`); train step: forward + weighted loss + backward at the method's batch; peak "
        "mem: what one training step adds (CPU: peak RSS, CUDA: allocator peak). FLOPs count "
        "multiply-adds as 2 (torch.utils.flop_counter). Ratios: against PyMAF with the same backbone. "
        f"Physical limit: the fastest of 10 n x n float32 matmuls (n = {n}, x4 on CUDA), measured in each "
        "model's process right after it; \"of matmul peak\" is the model's fastest batched forward against it. "
        "Latency and throughput are those of the fastest variant (every one is shown): contiguous or "
        "channels-last memory, with BatchNorm folded into the convolutions (the same outputs, checked) or "
        "not; bf16: that variant's batched forward under bfloat16 autocast, where the device computes "
        "bfloat16 natively, against a bfloat16 matmul. "
        f"At the start of the run the matmul reached {_num(matmul.get('cpu'))} GFLOP/s on CPU"
        + (f" ({_num(matmul.get('cpu_bf16'))} in bfloat16)" if "cpu_bf16" in matmul else "")
        + (f", {_num(matmul.get('cuda'))} on CUDA." if "cuda" in matmul else "."),
        "",
    ]
    lines += _table(METHOD_HEADER, method_rows(methods))
    cuda_rows = method_rows(methods, "cuda")
    if cuda_rows:
        lines += ["", "### On CUDA", ""] + _table(METHOD_HEADER, cuda_rows)
    return lines


def host_memory_lines(methods: Mapping) -> list[str]:
    """Each entry measured both ways (its "glibc_default" part): retained freed memory against glibc's
    default, with a blank line after; nothing when none was."""
    rows = []
    for method, per_backbone in methods.items():
        for backbone, entry in per_backbone.items():
            default = entry.get("glibc_default")
            if not default:
                continue
            rows.append([
                method, backbone,
                f"{_num(default['throughput_bs32'])} -> {_num(entry['throughput_bs32'])}",
                _num(entry["throughput_bs32_max"] / default["throughput_bs32_max"], 2),
                f"{_num(default['train_step_ms'])} -> {_num(entry['train_step_ms'])}",
                _num(default["train_step_ms"] / entry["train_step_ms"], 2),
                f"{_num(default['peak_mem_mb'], 0)} -> {_num(entry['peak_mem_mb'], 0)}",
            ])
    if not rows:
        return []
    header = ["method", "backbone", "throughput B32 (img/s)", "x (fastest repeats)", "train step (ms)",
              "x (medians)", "peak mem of a step (MB)"]
    return [
        "## Host memory",
        "",
        "Each model measured twice, each time in a fresh process: with glibc's default allocation (every large "
        "tensor a fresh mmap, unmapped when freed, so its pages are faulted in and zeroed again at every "
        "forward) and then retaining freed memory, as training runs do (`trainer_extra.retain_freed_memory`, "
        "densehmr.host_memory). Float32 figures as in the table above.",
        "",
        *_table(header, rows),
        "",
    ]


PAPER_HEADER = [
    "method", "setting", "backbone", "crop", "params (M)", "GFLOPs / image", "latency B1 (ms)",
    "throughput (img/s)", "of matmul peak", "bf16 img/s", "of bf16 matmul peak", "the paper reports",
]


def papers_lines(papers: list[Mapping]) -> list[str]:
    """The papers' own settings measured here, beside the speeds the papers report (a blank line after);
    nothing when none were measured."""
    if not papers:
        return []
    rows = []
    for p in papers:
        figures = "; ".join(figure_text(PaperFigure(**f), p) for f in p.get("figures", [])) or p.get("missing") or "-"
        crop = "x".join(map(str, p["image_size"])) if "image_size" in p else "-"
        batch = p.get("throughput_batch", "?")
        rows.append([
            p["method"], p["experiment"], p.get("backbone", "-"), crop,
            _num(p["params"] / 1e6, 2) if "params" in p else "-", _num(p.get("gflops"), 2),
            _num(p.get("latency_ms_bs1")), f"{_num(p.get('throughput_bs32'))} (B{batch})",
            _percent(p.get("peak_fraction")), _num(p.get("throughput_bs32_bf16")),
            _percent(p.get("peak_fraction_bf16")), figures,
        ])
    return [
        "## The papers' settings",
        "",
        "Each paper's own network and crop (configs/experiment/paper_*), inference only, measured as above. "
        "A reported time is turned into GFLOP/s with our FLOP count of the same network, and a fraction of "
        "the reporting GPU's float32 peak (the vendor's figure).",
        "",
    ] + _table(PAPER_HEADER, rows) + [""]


def _details(stage: Mapping) -> str:
    skip = {"value", "unit"}
    return ", ".join(
        f"{k} {_num(v, 2) if isinstance(v, float) else v}" for k, v in stage.items() if k not in skip
    )


def stages_lines(stages: Mapping) -> list[str]:
    rows = [[name, _num(s["value"], 2), s["unit"], _details(s)] for name, s in stages.items()]
    return ["## Stages", ""] + _table(["stage", "value", "unit", "details"], rows)


def targets_lines(targets: list[Mapping]) -> list[str]:
    verdict = {True: "pass", False: "**FAIL**", None: "not measured"}
    rows = [
        [t["name"], _num(t["value"], 2), f"{t['op']} {_num(t['target'], 1)}", verdict[t["pass"]], t.get("note", "")]
        for t in targets
    ]
    intro = [
        "The MeshPose rows judge the network as the paper builds it; the MeshPose light rows the throughput option "
        "(`experiment=meshpose_light`: a 3-stage backbone, a separable 64-channel neck), its accuracy cost in "
        "results/budget.md. \"Its backbone alone\": the ratio with heads that cost nothing, the ceiling of any "
        "head on that backbone.",
        "",
    ] if any(t["name"].startswith("MeshPose light") for t in targets) else []
    return ["## Targets", "", *intro] + _table(["target", "value", "bound", "result", "note"], rows)


def render_markdown(results: Mapping) -> str:
    mode = "`make bench QUICK=1` (fewer repeats, backbones and images)" if results.get("quick") else "`make bench`"
    lines = [
        "# Benchmarks",
        "",
        f"Written by {mode} on {results.get('date', '?')} in {_num(results.get('wall_s'), 0)} s. "
        "Figures in results/bench.json.",
        "",
        *machine_lines(results["device"]),
        "",
        *methods_lines(results),
        "",
        *host_memory_lines(results.get("methods", {})),
        *papers_lines(results.get("papers", [])),
        *stages_lines(results.get("stages", {})),
        "",
        *targets_lines(results.get("targets", [])),
    ]
    notes = results.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_markdown(results: Mapping, path: Path) -> Path:
    atomic_write_bytes(path, render_markdown(results).encode())
    return path


def write_report(results: Mapping, out_dir: Path) -> tuple[Path, Path]:
    """results/bench.json and results/bench.md under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json(results, out_dir / "bench.json"), write_markdown(results, out_dir / "bench.md")
