"""Per-method measurements: size, FLOPs, speed and memory of each method's network.

Every model is built through Hydra exactly as `densehmr.train` builds it (configs/method, configs/backbone),
so the numbers are those of the configured network, not of a stand-in. One (method, backbone) is measured
in a fresh process (`measure_isolated`) so that its peak memory is its own.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from densehmr.body.assets import Body
from densehmr.host_memory import retain_freed_memory
from densehmr.methods.registry import method_names
from densehmr.nn.fuse import fuse_conv_bn, outputs_close

REFERENCE_METHOD = "pymaf"
CUDA_MATMUL_SCALE = 4
T = TypeVar("T")


@dataclass(frozen=True)
class MethodSettings:
    """How one (method, backbone) is measured.

    image_size: (H, W) crop; None keeps the config's (configs/train.yaml).
    train_batch: batch of the training step; None keeps the config's `method.batch_size`.
    matmul_size: n of the n x n matmul measured next to the model (its device's practical peak; 4 n on
    CUDA, where a smaller one does not fill the device).
    memory_formats: those the forwards are timed in, one after the other; the fastest variant (by the
    median batched forward) gives the entry's latency and throughput.
    fold_bn: also time an inference copy with BatchNorm folded into the convolutions.
    bf16: also time the batched forward under bfloat16 autocast, where the device computes bfloat16
    natively (CPUs with AVX512-BF16 or AMX, CUDA devices that support it).
    retain_freed_memory: measure in a process that keeps freed host memory, as training runs do
    (densehmr.host_memory; process-wide: measure without it in a fresh process).
    """

    device: str = "cpu"
    threads: int | None = None
    warmup: int = 2
    latency_repeats: int = 10
    throughput_batch: int = 32
    throughput_repeats: int = 5
    train_repeats: int = 5
    image_size: tuple[int, int] | None = None
    train_batch: int | None = None
    matmul_size: int = 2048
    memory_formats: tuple[str, ...] = ("contiguous", "channels_last")
    fold_bn: bool = True
    bf16: bool = True
    retain_freed_memory: bool = True


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def available_methods(config_dir: str | Path) -> list[str]:
    """Method config names under `config_dir`/method, in the registry's presentation order."""
    return method_names(config_dir)


def compose_config(
    method: str, backbone: str | None, image_size: Sequence[int] | None = None, experiment: str | None = None
) -> DictConfig:
    """The training config of `method` with `backbone` (no logger; None: the default or the experiment's),
    under configs/experiment/`experiment` when given (image_size overrides its crop)."""
    from densehmr.runs import compose_train

    overrides = [f"method={method}", "logger=none"]
    if backbone is not None:
        overrides.append(f"backbone={backbone}")
    if experiment is not None:
        overrides.append(f"experiment={experiment}")
    if image_size is not None:
        overrides.append(f"image_size=[{int(image_size[0])},{int(image_size[1])}]")
    return compose_train(overrides)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def times_ms(
    fn: Callable[[], object], repeats: int, warmup: int = 1, device: str | torch.device = "cpu"
) -> list[float]:
    """Wall times (ms) of `repeats` calls of `fn()` after `warmup` calls, synchronized on CUDA."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str | torch.device = "cpu") -> float:
    """Median wall time (ms) of `fn()` over `repeats` calls after `warmup` calls."""
    return statistics.median(times_ms(fn, repeats, warmup, device))


def matmul_gflops(
    n: int = 2048, repeats: int = 10, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of the fastest of `repeats` (n x n) @ (n x n) matmuls in `dtype` (2 n^3 flops): the
    device's practical peak (the fastest call is the one least disturbed by other load)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms = min(times_ms(lambda: a @ b, repeats, warmup=2, device=device))
    return 2 * n**3 / (ms * 1e-3) / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_gflops(model: nn.Module, image: torch.Tensor) -> float:
    """GFLOPs per image of `model(image)` (image (B, 3, H, W)), counting multiply-adds as 2 flops
    (torch.utils.flop_counter: matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image)
    return counter.get_total_flops() / image.shape[0] / 1e9


def _status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: clear_refs 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Peak memory (MB) that `fn()` adds: on CUDA the allocator's peak above what was allocated before;
    on CPU the peak resident set above the resident set before (Linux /proc; elsewhere the growth of
    getrusage's max RSS, which reads 0 when an earlier peak was higher)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if _reset_peak_rss():
        before = _status_mb("VmRSS")
        fn()
        return _status_mb("VmHWM") - before
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware (elsewhere bf16 is emulated, slower than float32)."""
    from densehmr.config_resolvers import native_cpu_bf16

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_cpu_bf16()


def training_batch(
    body: Body, root: str | Path, image_size: Sequence[int], batch_size: int, split: str = "train"
) -> dict:
    """One augmented training batch of `batch_size` crops (H, W) read by the DataModule from a synthetic
    split under `root` (datamodules.synthetic.generate's layout); samples are drawn with replacement."""
    from datamodules.datamodule import DenseHMRDataModule

    spec = {
        "name": "synthetic",
        "root": str(root),
        "densepose_json": f"densepose_{split}.json",
        "smpl_npz": f"smpl_{split}.npz",
    }
    datamodule = DenseHMRDataModule(
        train=[spec], image_size=tuple(image_size), batch_size=batch_size, num_workers=0, body=body,
        samples_per_epoch=batch_size,
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch.pop("skipped", None)
    return batch


def _to(batch: Mapping, device: torch.device, size: int) -> dict:
    return {k: v[:size].to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _train_step(model, batch: dict) -> Callable[[], None]:
    """Forward + weighted loss + backward on `batch` (gradients dropped each time, no optimizer; the batch's
    targets computed once, outside the step)."""
    targets = model.targets(batch)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        total, _ = model.compute_loss(model(batch["image"]), batch, targets)
        total.backward()

    return step


def measure_inference(model: nn.Module, image_size: Sequence[int], settings: MethodSettings) -> dict:
    """Size, FLOPs and inference speed of `model` (already on settings.device) on random crops (H, W).

    The forwards are timed in variants, one after the other: each of settings.memory_formats with
    BatchNorm folded into the convolutions (densehmr.nn.fuse, when settings.fold_bn and any fold), and
    the unfolded model in the faster of those formats. Returns params, gflops (per image), conv_bn_folded
    (pairs folded), throughput_by_variant (median images/s of each) and, from the fastest variant
    (`variant`, `memory_format`, `folded`): latency_ms_bs1 (median; _min the fastest), throughput_bs32
    (images/s at settings.throughput_batch from the median time; _max from the fastest), gflops_per_s
    (_max); backbone_throughput_bs32_max (its `backbone` alone, where it has one: what no head can beat);
    with bf16: throughput_bs32_bf16 (_max) and gflops_per_s_bf16_max of that variant under bfloat16 autocast.
    matmul_gflops (float32, and matmul_gflops_bf16 with bf16) is the device's practical peak measured right
    after, under the same load.
    """
    device = torch.device(settings.device)
    h, w = (int(s) for s in image_size)
    gen = torch.Generator().manual_seed(0)
    single = torch.randn(1, 3, h, w, generator=gen).to(device)
    many = torch.randn(settings.throughput_batch, 3, h, w, generator=gen).to(device)
    result = {"params": count_params(model), "image_size": [h, w], "device": device.type}
    model.eval()
    with torch.no_grad():
        result["gflops"] = forward_gflops(model, single)
    folded, result["conv_bn_folded"] = (
        fuse_conv_bn(model, lambda m: m(single), outputs_close) if settings.fold_bn else (model, 0)
    )
    variants = [(name, folded, result["conv_bn_folded"] > 0) for name in settings.memory_formats]
    timed: dict[str, tuple[list[float], list[float]]] = {}
    kept: dict[str, tuple[str, nn.Module, bool]] = {}

    def time_variant(fmt_name: str, net: nn.Module, is_folded: bool) -> None:
        fmt = MEMORY_FORMATS[fmt_name]
        net.to(memory_format=fmt)
        one, batch = single.contiguous(memory_format=fmt), many.contiguous(memory_format=fmt)
        key = fmt_name if is_folded or not result["conv_bn_folded"] else f"{fmt_name}, BatchNorm unfolded"
        with torch.no_grad():
            timed[key] = (
                times_ms(lambda: net(one), settings.latency_repeats, settings.warmup, device),
                times_ms(lambda: net(batch), settings.throughput_repeats, settings.warmup, device),
            )
        kept[key] = (fmt_name, net, is_folded)

    def fastest() -> str:
        return min(timed, key=lambda key: statistics.median(timed[key][1]))

    for variant in variants:
        time_variant(*variant)
    if result["conv_bn_folded"]:
        time_variant(kept[fastest()][0], model, False)
    best = fastest()
    fmt_name, net, is_folded = kept[best]
    backbone = getattr(net, "backbone", None)
    if isinstance(backbone, nn.Module):
        batch = many.contiguous(memory_format=MEMORY_FORMATS[fmt_name])
        with torch.no_grad():
            backbone_ms = times_ms(lambda: backbone(batch), settings.throughput_repeats, settings.warmup, device)
        result["backbone_throughput_bs32_max"] = settings.throughput_batch * 1e3 / min(backbone_ms)
    bf16 = settings.bf16 and native_bf16(device)
    if bf16:
        batch = many.contiguous(memory_format=MEMORY_FORMATS[fmt_name])
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            batched_bf16 = times_ms(lambda: net(batch), settings.throughput_repeats, settings.warmup, device)
    n = settings.matmul_size * (CUDA_MATMUL_SCALE if device.type == "cuda" else 1)
    result["matmul_gflops"] = matmul_gflops(n, device=device)
    latency, batched = timed[best]
    per_s = settings.throughput_batch * 1e3
    result.update(
        variant=best,
        memory_format=fmt_name,
        folded=is_folded,
        throughput_by_variant={key: per_s / statistics.median(t[1]) for key, t in timed.items()},
        latency_ms_bs1=statistics.median(latency),
        latency_ms_bs1_min=min(latency),
        throughput_bs32=per_s / statistics.median(batched),
        throughput_bs32_max=per_s / min(batched),
        throughput_batch=settings.throughput_batch,
    )
    result["gflops_per_s"] = result["gflops"] * result["throughput_bs32"]
    result["gflops_per_s_max"] = result["gflops"] * result["throughput_bs32_max"]
    if bf16:
        result["matmul_gflops_bf16"] = matmul_gflops(n, device=device, dtype=torch.bfloat16)
        result["throughput_bs32_bf16"] = per_s / statistics.median(batched_bf16)
        result["throughput_bs32_bf16_max"] = per_s / min(batched_bf16)
        result["gflops_per_s_bf16_max"] = result["gflops"] * result["throughput_bs32_bf16_max"]
    result["threads"] = torch.get_num_threads()
    return result


def _process_settings(settings: MethodSettings) -> None:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.retain_freed_memory:
        retain_freed_memory()


def measure_method(
    method: str, backbone: str, batch: Mapping, settings: MethodSettings, experiment: str | None = None
) -> dict:
    """`measure_inference` of one configured model, plus its training step: train_step_ms (median of
    forward + weighted loss + backward at `train_batch`, float32, contiguous) and peak_mem_mb (what
    one training step adds).

    batch: a training batch (at least `train_batch` samples) at the crop size measured.
    experiment: configs/experiment/`experiment` applied on top (the backbone stays `backbone`).
    """
    from densehmr.runs import build_method

    _process_settings(settings)
    device = torch.device(settings.device)
    cfg = compose_config(method, backbone, settings.image_size, experiment)
    h, w = (int(s) for s in cfg.image_size)
    if tuple(batch["image"].shape[-2:]) != (h, w):
        raise ValueError(f"batch crops {tuple(batch['image'].shape[-2:])} differ from the config's {(h, w)}")
    train_batch = int(settings.train_batch or cfg.method.batch_size)
    if batch["image"].shape[0] < train_batch:
        raise ValueError(f"batch of {batch['image'].shape[0]} samples, the training step needs {train_batch}")

    model = build_method(cfg).to(device)
    # Memory first: a step's peak is only visible above every earlier one. That step warms up the rest.
    model.train()
    data = _to(batch, device, train_batch)
    step = _train_step(model, data)
    train = {"peak_mem_mb": peak_memory_mb(step, device)}
    train["train_step_ms"] = median_ms(step, settings.train_repeats, max(0, settings.warmup - 1), device)
    train["train_batch"] = train_batch
    model.zero_grad(set_to_none=True)
    return {**measure_inference(model, (h, w), settings), **train}


def measure_paper_setting(method: str, experiment: str, settings: MethodSettings) -> dict:
    """`measure_inference` of `method` as configs/experiment/`experiment` builds it (its backbone and
    crop), with the backbone's name added."""
    from densehmr.runs import build_method

    _process_settings(settings)
    cfg = compose_config(method, None, experiment=experiment)
    model = build_method(cfg).to(torch.device(settings.device))
    return {**measure_inference(model, cfg.image_size, settings), "backbone": str(cfg.backbone.name)}


def run_isolated(fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in a fresh spawned process (its own memory high-water mark, its own CUDA context);
    fn and args must pickle."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def measure_isolated(
    method: str, backbone: str, batch: Mapping, settings: MethodSettings, experiment: str | None = None
) -> dict:
    """`measure_method` in a fresh process, so that its peak memory is its own."""
    return run_isolated(measure_method, method, backbone, dict(batch), settings, experiment)


def add_peak_fractions(entry: dict) -> None:
    """In place: peak_fraction, the fastest float32 forward's GFLOP/s over the fastest float32 matmul
    measured next to it (best against best, so that other load on a shared machine cancels as far as it
    can), and peak_fraction_bf16 likewise for the bfloat16 forward against the bfloat16 matmul."""
    if entry.get("matmul_gflops"):
        entry["peak_fraction"] = entry["gflops_per_s_max"] / entry["matmul_gflops"]
    if entry.get("matmul_gflops_bf16") and "gflops_per_s_bf16_max" in entry:
        entry["peak_fraction_bf16"] = entry["gflops_per_s_bf16_max"] / entry["matmul_gflops_bf16"]


def add_ratios(methods: dict[str, dict[str, dict]]) -> None:
    """In place: each entry's ratios against REFERENCE_METHOD at the same backbone (throughput_vs_pymaf,
    speedup_bs1_vs_pymaf, params_vs_pymaf, gflops_vs_pymaf, backbone_only_vs_pymaf: its backbone alone
    against the reference's whole network, fastest repeats) and its `add_peak_fractions`. Also inside
    each entry's "cuda" part."""
    for per_backbone in methods.values():
        for backbone, entry in per_backbone.items():
            reference = methods.get(REFERENCE_METHOD, {}).get(backbone)
            for key in ("main", "cuda"):
                part = entry if key == "main" else entry.get(key)
                if part is None:
                    continue
                add_peak_fractions(part)
                ref = None if reference is None else (reference if key == "main" else reference.get(key))
                if ref is None:
                    continue
                part["throughput_vs_pymaf"] = part["throughput_bs32"] / ref["throughput_bs32"]
                part["speedup_bs1_vs_pymaf"] = ref["latency_ms_bs1"] / part["latency_ms_bs1"]
                part["params_vs_pymaf"] = part["params"] / ref["params"]
                part["gflops_vs_pymaf"] = part["gflops"] / ref["gflops"]
                if "backbone_throughput_bs32_max" in part:
                    # The ratio at heads that cost nothing: the ceiling of any head at this backbone.
                    part["backbone_only_vs_pymaf"] = (
                        part["backbone_throughput_bs32_max"] / ref.get("throughput_bs32_max", ref["throughput_bs32"])
                    )
