"""Each method's network on the CPU and on the check's device: the same weights and the same batch,
every output compared.

The networks are untrained, and an untrained network's BatchNorm statistics (mean 0, variance 1) blow
its eval-mode activations up to ~1e7 through dozens of layers; so the statistics are first set from the
batch itself (one train-mode pass, cumulative average), which makes the activations O(1) as a trained
network's are. Those statistics are part of the weights both devices then use.

Tolerances (float32 on both, TF32 off on the GPU): an output passes when the 99.9th percentile of
|device - CPU| over its elements is <= FP32_REL_TOL x max |CPU| (or <= FP32_ABS_FLOOR where the output is
that small). The two devices sum in different orders (cuDNN's algorithms, parallel reductions), which
moves float32 results by about 1e-6 relative per layer, so 1e-3 leaves room for the ~100 layers and the
iterative regressors while a buffer left on the wrong device, a dtype slip or a wrong index shows as
O(1); the percentile lets a decision taken on a near-tie (an argmax) flip in one element in a thousand,
and the maximum is reported beside it. Integer outputs must agree on INT_AGREEMENT of their elements.
The mixed-precision forward (fp16 on CUDA, bf16 on the CPU) is reported against the float32 CPU one
(the same percentile over max |CPU|), not judged.
"""

from __future__ import annotations

import gc
import math
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from densehmr.gpu_check.settings import CheckSettings

FP32_REL_TOL = 1e-3
FP32_ABS_FLOOR = 1e-5
INT_AGREEMENT = 0.999
QUANTILE = 0.999


def flatten(out, prefix: str = "") -> dict[str, Tensor]:
    """name -> tensor of a method's (nested dict / list) outputs, e.g. `steps.2.verts`."""
    if isinstance(out, Tensor):
        return {prefix: out}
    items = out.items() if isinstance(out, dict) else enumerate(out) if isinstance(out, list | tuple) else []
    flat: dict[str, Tensor] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


@dataclass(frozen=True)
class OutputDiff:
    """One output: max |device - CPU|, its QUANTILE percentile over max |CPU| (float outputs) and the
    mixed-precision forward's, or nan for integer outputs (judged by their agreement)."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    rel: float
    passed: bool
    amp_rel: float = math.nan


@dataclass(frozen=True)
class ForwardResult:
    method: str
    outputs: list[OutputDiff] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(o.passed for o in self.outputs)

    def worst(self) -> OutputDiff | None:
        floats = [o for o in self.outputs if not math.isnan(o.rel)]
        return max(floats, key=lambda o: o.rel) if floats else None


def _percentile(diff: Tensor) -> float:
    return float(np.quantile(diff.numpy().ravel(), QUANTILE)) if diff.numel() else 0.0


def compare(name: str, ref: Tensor, got: Tensor, amp: Tensor | None) -> OutputDiff:
    """The device output `got` against the CPU's `ref` (see the module's doc for the tolerances)."""
    got = got.detach().cpu()
    ref = ref.detach().cpu()
    if not ref.is_floating_point():
        same = float((got == ref).float().mean()) if ref.numel() else 1.0
        return OutputDiff(name, tuple(ref.shape), math.nan, math.nan, same >= INT_AGREEMENT)
    ref, got = ref.double(), got.double()
    diff = (got - ref).abs()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    max_abs = float(diff.max()) if ref.numel() else 0.0
    typical = _percentile(diff)
    rel = typical / scale if scale > 0 else 0.0 if typical == 0 else math.inf
    passed = typical <= max(FP32_REL_TOL * scale, FP32_ABS_FLOOR)
    amp_rel = math.nan
    if amp is not None and scale > 0:
        amp_rel = _percentile((amp.detach().cpu().double() - ref).abs()) / scale
    return OutputDiff(name, tuple(ref.shape), max_abs, rel, passed, amp_rel)


def calibrate_batchnorm(model: torch.nn.Module, image: Tensor) -> None:
    """Set every BatchNorm's running statistics to those of `image` (B, C, H, W), then eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one pass, the batch's own statistics
    model.train()
    with torch.no_grad():
        model(image)
    model.eval()


@contextmanager
def strict_float32() -> Iterator[None]:
    """TF32 off for the comparison (it rounds matmul and convolution inputs to 10 mantissa bits)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def check_batch(cfg, settings: CheckSettings) -> dict:
    """The first validation batch of the check's data, as training feeds it."""
    from densehmr.runs import build_datamodule

    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    loader = loader[0] if isinstance(loader, list) else loader
    return next(iter(loader))


def compare_method(method: str, cfg, settings: CheckSettings) -> ForwardResult:
    """`method` (built from cfg with seed 0) on the CPU and on settings.device; never raises."""
    from densehmr.runs import build_method

    stage = "building the model and batch"
    try:
        torch.manual_seed(0)
        model = build_method(cfg).eval()
        batch = check_batch(cfg, settings)
        image = model.network_input(batch, model.targets(batch)).float()
        calibrate_batchnorm(model, image)
        device = torch.device(settings.device)
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        with torch.no_grad():
            stage = "CPU forward"
            ref = flatten(model(image))
            stage = f"{device.type} float32 forward"
            model.to(device)
            with strict_float32():
                got = flatten(model(image.to(device)))
            stage = f"{device.type} {amp_dtype} autocast forward"
            with torch.autocast(device.type, dtype=amp_dtype):
                amp = flatten(model(image.to(device)))
        missing = sorted(set(ref) ^ set(got))
        if missing:
            return ForwardResult(method, error=f"outputs differ between devices: {missing}")
        return ForwardResult(method, [compare(name, ref[name], got[name], amp.get(name)) for name in ref])
    except Exception as exc:  # a failure is a finding of the check, reported with the others
        reason = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0]
        return ForwardResult(method, error=f"{stage}: {reason}")
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
