"""Inference copies of networks with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map y = a x + c (a = gamma / sqrt(var + eps),
c = beta - a mean); when its input is the output of a convolution and nothing else reads that output,
the map folds into the convolution: W' = a W (per output channel), b' = a b + c. Which convolution feeds
which BatchNorm is read from one traced forward (a BatchNorm whose input tensor is the output of the
convolution called just before it), and the folded copy is kept only if its outputs match the original's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module, run: Callable[[nn.Module], object]) -> list[tuple[str, str]]:
    """(convolution name, BatchNorm name) pairs of `model` in which the BatchNorm reads, in `run(model)`,
    exactly the tensor the convolution called just before it returned (and is called once)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []

    def record(module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], Tensor) and isinstance(output, Tensor):
            calls.append((module, inputs[0], output))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, _CONVS + _NORMS)]
    try:
        with torch.no_grad():
            run(model)
    finally:
        for handle in handles:
            handle.remove()
    count: dict[nn.Module, int] = {}
    for module, _, _ in calls:
        count[module] = count.get(module, 0) + 1
    pairs = []
    for (prev, _, prev_out), (module, module_in, _) in zip(calls, calls[1:], strict=False):
        if (isinstance(prev, _CONVS) and isinstance(module, _NORMS) and module_in is prev_out
                and count[prev] == count[module] == 1 and module.track_running_stats):
            pairs.append((names[prev], names[module]))
    return pairs


def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """In place: conv computes conv followed by norm (eval mode); norm becomes unnecessary."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else (
        1.0 / torch.sqrt(norm.running_var + norm.eps))
    shift = (norm.bias if norm.affine else 0.0) - scale * norm.running_mean
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(bias * scale + shift)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def fuse_conv_bn(
    model: nn.Module, run: Callable[[nn.Module], object], compare: Callable[[object, object], bool]
) -> tuple[nn.Module, int]:
    """An eval-mode copy of `model` with every `conv_bn_pairs` pair folded, and how many were; the
    model itself (a copy, 0) when `compare(original outputs, folded outputs)` rejects the folded one."""
    reference = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(reference, run)
    folded = copy.deepcopy(reference)
    with torch.no_grad():
        for conv_name, norm_name in pairs:
            _fold(folded.get_submodule(conv_name), folded.get_submodule(norm_name))
            _replace(folded, norm_name, nn.Identity())
        if not pairs or not compare(run(reference), run(folded)):
            return reference, 0
    return folded, len(pairs)


def outputs_close(a: object, b: object, rtol: float = 1e-3) -> bool:
    """Whether two outputs (tensors, or dicts / tuples / lists of them) agree: every floating tensor
    within rtol of its largest magnitude, every other leaf equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(outputs_close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(outputs_close(x, y, rtol) for x, y in zip(a, b, strict=True))
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return False
        if not a.is_floating_point():
            return bool(torch.equal(a, b))
        scale = a.abs().amax().item() if a.numel() else 0.0
        return bool(((a - b).abs() <= rtol * max(scale, 1e-12)).all())
    return a == b
