"""Per-stage measurements: every step a user waits for, outside the networks.

Each stage returns a record {value, unit, ...extra}; the measurements themselves are those of the stage's
own benchmark module (densehmr.render.benchmark, densehmr.metrics.benchmark, datamodules.benchmark) so the
bench and those modules cannot drift apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from densehmr.bench.methods import median_ms
from densehmr.body.assets import Body

STAGE_ORDER = (
    "synthetic_generation",
    "datamodule",
    "body_forward",
    "hard_raster",
    "soft_silhouette",
    "densepose_eval",
    "onnx",
)
# Where exported models are looked for (`make export` writes outputs/export/ by default).
ONNX_SEARCH = ("outputs", "runs", "results")


@dataclass(frozen=True)
class StageSettings:
    """Sizes of the stage measurements (the defaults are the targets' settings)."""

    repeats: int = 10
    threads: int | None = None
    body_batch: int = 64
    raster_size: int = 256
    soft_batch: int = 16
    soft_size: int = 64
    generation_images: int = 100
    generation_size: int = 256
    workers: int = 2
    datamodule_images: int = 100
    datamodule_batches: int = 40
    datamodule_batch: int = 32
    datamodule_size: int = 128
    densepose_instances: int = 2000
    densepose_points: int = 120
    onnx_image_size: tuple[int, int] = (128, 128)

    @property
    def torch_threads(self) -> int:
        return self.threads or torch.get_num_threads()


def record(value: float, unit: str, **extra) -> dict:
    return {"value": float(value), "unit": unit, **extra}


def body_forward(body: Body, settings: StageSettings, device: str = "cpu") -> dict:
    """ms of one smplx forward of the body model for a batch of posed, shaped bodies."""
    from densehmr.body.smpl_layout import make_smplx

    n = settings.body_batch
    model = make_smplx(body.model_file, body.vertex_ids).to(device)
    gen = torch.Generator().manual_seed(0)
    params = {
        "betas": torch.randn(n, 10, generator=gen).to(device),
        "body_pose": (0.2 * torch.randn(n, 69, generator=gen)).to(device),
        "global_orient": (0.2 * torch.randn(n, 3, generator=gen)).to(device),
    }
    with torch.no_grad():
        ms = median_ms(lambda: model(**params), settings.repeats, warmup=2, device=device)
    return record(ms, "ms / batch", batch=n, device=torch.device(device).type, vertices=body.num_vertices)


def hard_raster(settings: StageSettings) -> dict:
    from densehmr.render.benchmark import bench_hard_raster

    ms = bench_hard_raster(settings.raster_size, 1, settings.repeats, settings.torch_threads)
    return record(ms, "ms / image", size=settings.raster_size, faces=27360, threads=settings.torch_threads)


def soft_silhouette(settings: StageSettings) -> dict:
    from densehmr.render.benchmark import bench_soft_silhouette

    ms = bench_soft_silhouette(settings.soft_size, settings.soft_batch, settings.repeats, settings.torch_threads)
    return record(
        ms, "ms fwd+bwd / batch", size=settings.soft_size, batch=settings.soft_batch, faces=1200,
        threads=settings.torch_threads,
    )


def synthetic_generation(body: Body, settings: StageSettings, root: Path) -> dict:
    """Images/s of `generate` writing a fresh split of generation_images under `root` (pool start included),
    shards spread over the workers."""
    from datamodules.synthetic import generate

    num = settings.generation_images
    shard = max(1, math.ceil(num / (2 * settings.workers)))
    start = time.perf_counter()
    manifest = generate(
        root, "train", num, settings.generation_size, 0, body=body, shard_size=shard,
        workers=settings.workers, progress=False,
    )
    seconds = time.perf_counter() - start
    return record(
        num / seconds, "images / s", size=settings.generation_size, workers=settings.workers,
        images=num, annotations=manifest["counts"]["annotations"],
    )


def datamodule(body: Body, settings: StageSettings, root: Path) -> dict:
    """Samples/s of the training DataLoader (augmented) on datamodules.benchmark's fixture dataset; also
    the rate its CPU time allows with a free core per worker (a fairer figure on a loaded machine)."""
    from datamodules.benchmark import measure, write_fixture_dataset

    write_fixture_dataset(root, num_images=settings.datamodule_images)
    size = (settings.datamodule_size, settings.datamodule_size)
    rate = measure(body, root, size, settings.datamodule_batch, settings.workers, settings.datamodule_batches)
    return record(
        rate.samples_per_s, "samples / s", cpu_bound_rate=rate.cpu_bound_rate(settings.workers),
        size=settings.datamodule_size, workers=settings.workers,
        batch=settings.datamodule_batch, images=settings.datamodule_images,
    )


def densepose_eval(settings: StageSettings) -> dict:
    """Seconds of DensePose evaluation (GPS, GPSm, IOU) per 1000 instances of densepose_points points."""
    from densehmr.metrics.benchmark import time_densepose

    out = time_densepose(settings.densepose_instances, settings.densepose_points)
    per_1000 = 1000 / settings.densepose_instances
    return record(
        out["total_s"] * per_1000, "s / 1000 instances",
        cpu_s_per_1000=out["cpu_s"] * per_1000, instances=settings.densepose_instances,
        points=settings.densepose_points,
    )


def find_onnx(roots: Sequence[Path]) -> list[Path]:
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*.onnx"))


def onnx_latency(path: Path, settings: StageSettings) -> dict:
    """Median ms per image of onnxruntime (CPU) on one random input, its symbolic dims set to batch 1
    and onnx_image_size."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.torch_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    fallback = [1, 3, *settings.onnx_image_size]
    shape = [d if isinstance(d, int) else (fallback + [1] * len(first.shape))[i] for i, d in enumerate(first.shape)]
    feed = {first.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    ms = median_ms(lambda: session.run(None, feed), settings.repeats, warmup=2)
    return record(ms / max(1, shape[0]), "ms / image", input=shape)


def run_stages(
    body: Body,
    settings: StageSettings,
    workdir: Path,
    names: Sequence[str] = STAGE_ORDER,
    onnx_roots: Sequence[Path] = tuple(Path(p) for p in ONNX_SEARCH),
    cuda: bool = False,
    notes: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """The stages in `names` (STAGE_ORDER's); a stage that fails is noted and skipped, never fatal.
    Generation writes its split to workdir/synthetic (reused for the methods' training batches)."""
    notes = notes if notes is not None else []
    jobs: dict[str, Callable[[], dict]] = {
        "synthetic_generation": lambda: synthetic_generation(body, settings, workdir / "synthetic"),
        "datamodule": lambda: datamodule(body, settings, workdir / "fixture"),
        "body_forward": lambda: body_forward(body, settings),
        "hard_raster": lambda: hard_raster(settings),
        "soft_silhouette": lambda: soft_silhouette(settings),
        "densepose_eval": lambda: densepose_eval(settings),
    }
    stages: dict[str, dict] = {}
    for name in names:
        if name == "onnx":
            paths = find_onnx(onnx_roots)
            if not paths:
                where = ", ".join(map(str, onnx_roots))
                notes.append(f"onnx: no exported model under {where}; `make export` writes one")
            for path in paths:
                _run(f"onnx:{path}", lambda p=path: onnx_latency(p, settings), stages, notes, log)
            continue
        _run(name, jobs[name], stages, notes, log)
        if name == "body_forward" and cuda:
            _run("body_forward_cuda", lambda: body_forward(body, settings, "cuda"), stages, notes, log)
    return stages


def _run(name: str, job: Callable[[], dict], stages: dict, notes: list[str], log: Callable[[str], None]) -> None:
    log(f"stage {name} ...")
    start = time.perf_counter()
    try:
        stages[name] = job()
    # A bench reports what it could measure: one broken stage must not hide the others.
    except Exception as err:  # noqa: BLE001
        notes.append(f"{name}: failed, {type(err).__name__}: {err}".splitlines()[0])
        return
    stages[name]["wall_s"] = time.perf_counter() - start
    log(f"stage {name}: {stages[name]['value']:.4g} {stages[name]['unit']}")
