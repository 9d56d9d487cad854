"""Soft-argmax (the expectation of a softmax) over 2D heatmaps and 1D bin distributions.

2D positions are continuous pixel coordinates of the heatmap grid (see `densehmr.render.cameras`):
cell (row i, col j) has its centre at (x, y) = (j + 0.5, i + 0.5), so a heatmap at stride s maps to
crop pixels by multiplying by s. The gain sharpens the softmax: a delta of height h at one cell gets
weight exp(gain h) against 1 for every other cell.
"""

from __future__ import annotations

import torch
from torch import Tensor


def spatial_softmax(heatmaps: Tensor, gain: float | Tensor = 1.0) -> Tensor:
    """Softmax over the pixels of each channel: (B, C, H, W) -> (B, C, H, W), summing to 1 per channel."""
    b, c, h, w = heatmaps.shape
    # float32 even under bf16 autocast: a bf16 expectation is ~0.5 px coarse over a 128 px crop.
    return torch.softmax(heatmaps.float().reshape(b, c, h * w) * gain, dim=-1).reshape(b, c, h, w)


def argsoftmax_2d(heatmaps: Tensor, gain: float | Tensor = 1.0) -> Tensor:
    """Expected (x, y) (B, C, 2) of each channel's spatial softmax, in heatmap pixel coordinates."""
    prob = spatial_softmax(heatmaps, gain)
    h, w = heatmaps.shape[-2:]
    xs = torch.arange(w, device=heatmaps.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(h, device=heatmaps.device, dtype=prob.dtype) + 0.5
    x = (prob.sum(-2) * xs).sum(-1)
    y = (prob.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


def argsoftmax_1d(logits: Tensor, gain: float | Tensor = 1.0) -> Tensor:
    """Expected bin index (...) of a softmax over the last axis of logits (..., K), in [0, K - 1]."""
    prob = torch.softmax(logits.float() * gain, dim=-1)
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=prob.dtype)
    return (prob * bins).sum(-1)
