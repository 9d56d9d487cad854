"""Losses of HMR-style body-parameter regressors (DCT, PyMAF): 2D and 3D keypoints, body parameters.

Every term is a weighted mean over what is annotated: per-keypoint weights (B, J) carry visibility
and the sample's `has_*` flag, per-sample flags (B,) gate the parameter terms. A term with nothing
annotated is an exact zero that stays in the graph. `norm` picks the per-coordinate penalty:
"l1" |d| or "l2" d^2 (SPIN/PyMAF's MSE); a point's loss is its mean over coordinates.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Norm = Literal["l1", "l2"]


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


def keypoint_2d_loss(
    pred: Tensor, target: Tensor, weight: Tensor, scale: float = 1.0, norm: Norm = "l1"
) -> Tensor:
    """2D keypoints pred (B, J, 2) against target (B, J, 2), both crop px, weight (B, J) >= 0
    (e.g. visible and has_kp2d). Coordinates are divided by `scale` (px per unit, e.g. half the crop
    for HMR's [-1, 1] frame) before the penalty."""
    diff = (pred - target.to(pred)) / scale
    return _weighted_mean(_penalty(diff, norm).mean(-1), weight)


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

