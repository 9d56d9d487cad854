"""Speed, size and cost of every method and every stage, in one run: `python -m densehmr.bench [--quick]`.

`run_bench` measures the stages (densehmr.bench.stages), then every (method, backbone) in its own process
(densehmr.bench.methods), checks the targets (densehmr.bench.targets) and writes results/bench.{json,md}
(densehmr.bench.report).
"""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from densehmr.bench.methods import (
    CUDA_MATMUL_SCALE,
    MethodSettings,
    add_peak_fractions,
    add_ratios,
    available_methods,
    compose_config,
    matmul_gflops,
    measure_isolated,
    measure_method,
    measure_paper_setting,
    native_bf16,
    run_isolated,
    training_batch,
)
from densehmr.bench.papers import PAPER_SETTINGS, PaperSetting
from densehmr.bench.report import write_report
from densehmr.bench.stages import STAGE_ORDER, StageSettings, run_stages
from densehmr.bench.targets import evaluate_targets
from densehmr.host_memory import retain_freed_memory

FULL_BACKBONES = ("resnet18", "resnet50", "mobilenet_v3_large", "hrnet_w32")
QUICK_BACKBONES = ("mobilenet_v3_large",)
# MeshPose-XS is compared with PyMAF-R50: measured even when resnet50 is not among the backbones.
XS_REFERENCE = (("pymaf", "resnet50"),)


@dataclass(frozen=True)
class Variant:
    """`method` under configs/experiment/`experiment`, benched at every backbone under the name `name`."""

    name: str
    method: str
    experiment: str


VARIANTS = (Variant("meshpose_light", "meshpose", "meshpose_light"),)


@dataclass(frozen=True)
class Job:
    """One network to measure: results key `name`, built from `method` (under `experiment`) with `backbone`."""

    name: str
    method: str
    backbone: str
    experiment: str | None = None


@dataclass(frozen=True)
class BenchSettings:
    """One bench run: every method (None: every config under configs/method/, in the registry's order) with
    every backbone, plus the (method, backbone) pairs in `extra` whose method is measured, plus each of
    `variants` whose method is measured, with every backbone.
    isolate: each (method, backbone) in a fresh process (peak memory needs it).
    papers: the papers' own settings, measured for inference only (their crops make a CPU training step
    minutes long), at throughput batch `paper_batch`.
    host_memory_baseline: also measure every method at the first backbone without retaining freed host
    memory (glibc's default; densehmr.host_memory), each in its own process: what retaining buys, in this run."""

    quick: bool = False
    methods: tuple[str, ...] | None = None
    backbones: tuple[str, ...] = FULL_BACKBONES
    extra: tuple[tuple[str, str], ...] = XS_REFERENCE
    variants: tuple[Variant, ...] = VARIANTS
    stages: tuple[str, ...] = STAGE_ORDER
    method: MethodSettings = field(default_factory=MethodSettings)
    stage: StageSettings = field(default_factory=StageSettings)
    isolate: bool = True
    cuda: bool = field(default_factory=torch.cuda.is_available)
    batch_images: int = 16  # synthetic images generated for the training batch when generation is not run
    papers: tuple[PaperSetting, ...] = PAPER_SETTINGS
    paper_batch: int = 8
    host_memory_baseline: bool = True

    @classmethod
    def quick_preset(cls, **changes) -> BenchSettings:
        """A short run: MobileNetV3 (+ PyMAF-R50), few repeats, small stage sizes."""
        return replace(
            cls(
                quick=True,
                backbones=QUICK_BACKBONES,
                papers=(),
                method=MethodSettings(
                    warmup=1, latency_repeats=5, throughput_repeats=2, train_repeats=1, matmul_size=1024
                ),
                stage=StageSettings(
                    repeats=3, generation_images=16, datamodule_images=40, datamodule_batches=8,
                    densepose_instances=200,
                ),
            ),
            **changes,
        )


def describe_device() -> dict:
    """CPU model, usable cores, memory, torch version and threads, CUDA device name (or None)."""
    cpu = platform.processor() or platform.machine()
    memory_gb = None
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        memory_gb = kb / 2**20
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_gb": memory_gb,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }


def _jobs(methods: Sequence[str], settings: BenchSettings) -> list[Job]:
    """Every method with every backbone, then settings.extra's pairs and the variants of measured methods."""
    jobs = [Job(m, m, b) for m in methods for b in settings.backbones]
    jobs += [Job(m, m, b) for m, b in settings.extra if m in methods and Job(m, m, b) not in jobs]
    jobs += [Job(v.name, v.method, b, v.experiment) for v in settings.variants if v.method in methods
             for b in settings.backbones]
    return jobs


def _training_shape(job: Job, settings: BenchSettings) -> tuple[tuple[int, int], int]:
    """(crop (H, W), training batch size) of the job's network as configured and overridden by settings.method."""
    cfg = compose_config(job.method, job.backbone, settings.method.image_size, job.experiment)
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    return size, int(settings.method.train_batch or cfg.method.batch_size)


def _batches(body, settings: BenchSettings, jobs: Sequence[Job], root: Path) -> dict[Job, dict]:
    """Each job's training batch: one per crop size, as large as the largest training batch at that size, read
    from the synthetic split under `root` (generated here when the generation stage did not run)."""
    from datamodules.synthetic import generate

    if not (root / "densepose_train.json").exists():
        generate(root, "train", settings.batch_images, settings.stage.generation_size, 0, body=body, progress=False)
    shapes = {job: _training_shape(job, settings) for job in jobs}
    need: dict[tuple[int, int], int] = {}
    for size, batch in shapes.values():
        need[size] = max(need.get(size, 0), batch)
    by_size = {size: training_batch(body, root, size, n) for size, n in need.items()}
    return {job: by_size[size] for job, (size, _) in shapes.items()}


def run_bench(
    settings: BenchSettings, out_dir: Path | None = Path("results"), log: Callable[[str], None] = print
) -> dict:
    """Measure, check the targets, write bench.json and bench.md under out_dir (None: write nothing)."""
    from densehmr.body import load_body
    from densehmr.train import CONFIG_DIR

    start = time.perf_counter()
    device = {**describe_device(), "load_start": list(os.getloadavg())}
    if settings.method.threads:
        torch.set_num_threads(settings.method.threads)
    if settings.method.retain_freed_memory:  # the stages measured here, as training runs them
        retain_freed_memory()
    notes: list[str] = []
    body = load_body("open")
    methods = list(settings.methods) if settings.methods is not None else available_methods(CONFIG_DIR)
    configured = set(available_methods(CONFIG_DIR))
    for missing in [m for m in methods if m not in configured]:
        notes.append(f"{missing}: no configs/method/{missing}.yaml, skipped")
    methods = [m for m in methods if m in configured]

    matmul = {"cpu": matmul_gflops(settings.method.matmul_size, device="cpu")}
    if native_bf16(torch.device("cpu")):
        matmul["cpu_bf16"] = matmul_gflops(settings.method.matmul_size, device="cpu", dtype=torch.bfloat16)
    if settings.cuda:
        matmul["cuda"] = matmul_gflops(CUDA_MATMUL_SCALE * settings.method.matmul_size, device="cuda")
    log(f"matmul: {matmul}")

    jobs = _jobs(methods, settings)
    with tempfile.TemporaryDirectory(prefix="densehmr-bench-") as tmp:
        workdir = Path(tmp)
        stages = run_stages(body, settings.stage, workdir, settings.stages, cuda=settings.cuda, notes=notes, log=log)
        batches = _batches(body, settings, jobs, workdir / "synthetic") if jobs else {}
    results_methods = _measure_methods(jobs, settings, batches, notes, log)
    add_ratios(results_methods)
    papers = _measure_papers(settings, notes, log)
    device["load_end"] = list(os.getloadavg())
    results = {
        "quick": settings.quick,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - start,
        "device": device,
        "settings": asdict(settings),
        "matmul_gflops": matmul,
        "methods": results_methods,
        "papers": papers,
        "stages": stages,
        "targets": evaluate_targets(results_methods, stages),
        "notes": notes,
    }
    if out_dir is not None:
        write_report(results, Path(out_dir))
    return results


def _measure_methods(
    jobs: Sequence[Job], settings: BenchSettings, batches: dict[Job, dict], notes: list[str],
    log: Callable[[str], None],
) -> dict[str, dict[str, dict]]:
    """name (a method or a variant) -> backbone -> measurements (with a "cuda" part when settings.cuda);
    failures are noted."""
    measure = measure_isolated if settings.isolate else measure_method
    out: dict[str, dict[str, dict]] = {}
    for job in jobs:
        batch = batches[job]
        what = f"{job.name}/{job.backbone}"
        log(f"method {what} ...")
        # One method that does not build or run must not hide the others.
        try:
            entry = measure(job.method, job.backbone, batch, settings.method, job.experiment)
        except Exception as err:  # noqa: BLE001
            notes.append(f"{what}: failed, {type(err).__name__}: {err}".splitlines()[0])
            continue
        if settings.cuda:
            try:
                entry["cuda"] = measure(job.method, job.backbone, batch, replace(settings.method, device="cuda"),
                                        job.experiment)
            except Exception as err:  # noqa: BLE001
                notes.append(f"{what} on CUDA: failed, {type(err).__name__}: {err}".splitlines()[0])
        if job.experiment:
            entry["experiment"] = job.experiment
        out.setdefault(job.name, {})[job.backbone] = entry
        log(
            f"method {what}: {entry['latency_ms_bs1']:.1f} ms B1, "
            f"{entry['throughput_bs32']:.1f} img/s, train {entry['train_step_ms']:.0f} ms"
        )
    if settings.host_memory_baseline and jobs:
        first = [j for j in jobs if j.experiment is None and j.backbone == settings.backbones[0]]
        _measure_glibc_default(out, first, settings, batches, notes, log)
    return out


GLIBC_DEFAULT_KEYS = ("throughput_bs32", "throughput_bs32_max", "latency_ms_bs1", "train_step_ms", "peak_mem_mb")


def _measure_glibc_default(
    out: dict[str, dict[str, dict]], jobs: Sequence[Job], settings: BenchSettings, batches: dict[Job, dict],
    notes: list[str], log: Callable[[str], None],
) -> None:
    """In place: each job's entry gains "glibc_default", GLIBC_DEFAULT_KEYS measured again in a fresh process
    that returns freed memory to the system (glibc's default)."""
    if not settings.isolate:
        notes.append("host memory baseline: needs isolate (the setting cannot be undone in this process)")
        return
    default = replace(settings.method, retain_freed_memory=False)
    for job in jobs:
        entry = out.get(job.name, {}).get(job.backbone)
        if entry is None:
            continue
        log(f"method {job.name}/{job.backbone}, glibc's default allocation ...")
        batch = batches[job]
        try:
            measured = measure_isolated(job.method, job.backbone, batch, default, job.experiment)
        except Exception as err:  # noqa: BLE001
            notes.append(f"{job.name}/{job.backbone} at glibc's default: failed, {type(err).__name__}: {err}"
                         .splitlines()[0])
            continue
        entry["glibc_default"] = {key: measured[key] for key in GLIBC_DEFAULT_KEYS}


def _measure_papers(settings: BenchSettings, notes: list[str], log: Callable[[str], None]) -> list[dict]:
    """One entry per settings.papers: method, experiment, the paper's figures and why any are missing,
    and `measure_paper_setting`'s measurements (with a "cuda" part when settings.cuda)."""
    out = []
    base = replace(settings.method, image_size=None, throughput_batch=settings.paper_batch)
    measure = (lambda *a: run_isolated(measure_paper_setting, *a)) if settings.isolate else measure_paper_setting
    for paper in settings.papers:
        log(f"paper setting {paper.method} / {paper.experiment} ...")
        entry = {"method": paper.method, "experiment": paper.experiment, "missing": paper.missing,
                 "figures": [asdict(f) for f in paper.figures]}
        for device in ("cpu", "cuda") if settings.cuda else ("cpu",):
            try:
                part = measure(paper.method, paper.experiment, replace(base, device=device))
            except Exception as err:  # noqa: BLE001
                notes.append(f"{paper.method}/{paper.experiment} on {device}: failed, {type(err).__name__}: {err}"
                             .splitlines()[0])
                continue
            add_peak_fractions(part)
            if device == "cpu":
                entry.update(part)
            else:
                entry["cuda"] = part
        out.append(entry)
    return out


__all__ = ["BenchSettings", "Variant", "describe_device", "run_bench"]
