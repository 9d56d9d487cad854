"""Losses of HMR-style body-parameter regressors (DCT, PyMAF): 2D and 3D keypoints, body parameters.

Every term is a weighted mean over what is annotated: per-keypoint weights (B, J) carry visibility
and the sample's `has_*` flag, per-sample flags (B,) gate the parameter terms. A term with nothing
annotated is an exact zero that stays in the graph. `norm` picks the per-coordinate penalty:
"l1" |d| or "l2" d^2 (SPIN/PyMAF's MSE); a point's loss is its mean over coordinates.

Keypoint means are "pooled" (over every annotated keypoint of the batch) or "per_sample" (over each
sample's annotated keypoints, then over the samples that have any: DCT's trainer, whose weights are
1 / (number annotated) per sample, so a person with few keypoints counts as much as one with many).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Norm = Literal["l1", "l2"]
Reduction = Literal["pooled", "per_sample"]


def _penalty(diff: Tensor, norm: Norm) -> Tensor:
    if norm == "l1":
        return diff.abs()
    if norm == "l2":
        return diff.square()
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def _weighted_mean(per_item: Tensor, weight: Tensor) -> Tensor:
    """sum(w x) / sum(w) with w >= 0 (no host sync); exactly 0 (in the graph) when every weight is 0.
    Unannotated items must be finite (the batch pads with zeros)."""
    weight = weight.to(per_item)
    return (per_item * weight).sum() / weight.sum().clamp(min=1e-12)


def per_sample_mean(per_item: Tensor, weight: Tensor) -> Tensor:
    """Mean over the samples with a positive weight of each sample's weighted mean: per_item, weight
    (B, N), w >= 0; exactly 0 (in the graph) when every weight is 0. Unweighted items must be finite."""
    weight = weight.to(per_item)
    total = weight.sum(1)
    has = total > 0
    per_sample = (per_item * weight).sum(1) / total.clamp(min=1e-12)
    return torch.where(has, per_sample, torch.zeros_like(per_sample)).sum() / has.sum().clamp(min=1)


def keypoint_2d_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    scale: float = 1.0,
    norm: Norm = "l1",
    reduction: Reduction = "pooled",
) -> Tensor:
    """2D keypoints pred (B, J, 2) against target (B, J, 2), both crop px, weight (B, J) >= 0
    (e.g. visible and has_kp2d). Coordinates are divided by `scale` (px per unit, e.g. half the crop
    for HMR's [-1, 1] frame) before the penalty; `reduction` as in the module docstring."""
    diff = (pred - target.to(pred)) / scale
    per_point = _penalty(diff, norm).mean(-1)
    if reduction == "per_sample":
        return per_sample_mean(per_point, weight)
    if reduction == "pooled":
        return _weighted_mean(per_point, weight)
    raise ValueError(f"reduction must be 'pooled' or 'per_sample', got {reduction!r}")


def keypoint_3d_loss(
    pred: Tensor, target: Tensor, weight: Tensor, root: int | tuple[int, ...] = 0, norm: Norm = "l2"
) -> Tensor:
    """3D joints pred (B, J, 3) against target (B, J, 3), metres, each skeleton centred on its root
    (a joint index, or the mean of several, e.g. both hips), weight (B, J) >= 0."""
    roots = [root] if isinstance(root, int) else list(root)
    target = target.to(pred)
    pred = pred - pred[:, roots].mean(1, keepdim=True)
    target = target - target[:, roots].mean(1, keepdim=True)
    return _weighted_mean(_penalty(pred - target, norm).mean(-1), weight)


def rotation_matrix_loss(pred: Tensor, target: Tensor, has: Tensor, norm: Norm = "l2") -> Tensor:
    """Body pose as rotation matrices pred, target (B, K, 3, 3) (SPIN/PyMAF: all 24 joints), mean
    over the matrix entries of samples with `has` (B,) bool."""
    per_sample = _penalty(pred - target.to(pred), norm).flatten(1).mean(1)
    return _weighted_mean(per_sample, has)


def betas_loss(pred: Tensor, target: Tensor, has: Tensor, norm: Norm = "l2") -> Tensor:
    """Shape coefficients pred, target (B, S), mean over coefficients of samples with `has` (B,) bool."""
    per_sample = _penalty(pred - target.to(pred), norm).mean(1)
    return _weighted_mean(per_sample, has)


def camera_scale_penalty(cam: Tensor, rate: float = 10.0) -> Tensor:
    """PyMAF's camera regulariser mean(exp(-rate s)^2) of weak-perspective cams (B, 3) (s, tx, ty): about
    0 for the scales a person in the crop has (s ~ 1), it pushes s up only as it nears 0 or turns
    negative, where the camera would put the body at infinite or negative depth."""
    return torch.exp(-rate * cam[:, 0]).square().mean()
