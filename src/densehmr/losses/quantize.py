"""DenseReg's quantized regression of a coordinate in [0, 1]: a bin out of K plus a residual in the bin.

x = (b + r) / K with b in 0..K-1 and r = x K - b in [0, 1]. Decoding is hard (the most likely bin and
its residual) or soft, DenseReg's mixture of experts: the bin probabilities weight every bin's decode.
"""

from __future__ import annotations

import torch
from torch import Tensor

DECODE_MODES = ("hard", "soft")


def encode(x: Tensor, num_bins: int) -> tuple[Tensor, Tensor]:
    """Bin (same shape, int64 0..K-1) and in-bin residual (in [0, 1]) of coordinates x in [0, 1]."""
    scaled = x.clamp(0.0, 1.0) * num_bins
    bins = scaled.floor().long().clamp(0, num_bins - 1)
    return bins, scaled - bins.to(scaled.dtype)


def decode_hard(bin_logits: Tensor, residuals: Tensor, dim: int = -1) -> Tensor:
    """Coordinates from bin scores and per-bin residuals, both with K bins along `dim`: (b + r_b) / K
    for the arg-max bin b; the residual is clamped to its bin."""
    num_bins = bin_logits.shape[dim]
    best = bin_logits.argmax(dim, keepdim=True)
    r = residuals.gather(dim, best).clamp(0.0, 1.0)
    return ((best.to(r.dtype) + r) / num_bins).squeeze(dim)


def decode_soft(bin_logits: Tensor, residuals: Tensor, dim: int = -1) -> Tensor:
    """Mixture-of-experts coordinates: sum over bins k of softmax(scores)_k (k + r_k) / K."""
    num_bins = bin_logits.shape[dim]
    prob = bin_logits.softmax(dim)
    shape = [1] * bin_logits.dim()
    shape[dim] = num_bins
    k = torch.arange(num_bins, device=bin_logits.device, dtype=prob.dtype).view(shape)
    return (prob * (k + residuals.clamp(0.0, 1.0))).sum(dim) / num_bins


def decode(bin_logits: Tensor, residuals: Tensor, mode: str = "hard", dim: int = -1) -> Tensor:
    """`decode_hard` or `decode_soft` by name."""
    if mode == "hard":
        return decode_hard(bin_logits, residuals, dim)
    if mode == "soft":
        return decode_soft(bin_logits, residuals, dim)
    raise ValueError(f"unknown decode mode {mode!r}: expected one of {DECODE_MODES}")
