"""DensePose-RCNN's losses on dense prediction maps supervised by sparse annotated points.

Prediction maps (B, C, h, w) cover the whole (H, W) crop, whatever their resolution; annotated points
are in continuous crop pixels (pixel (i, j) covers [j, j+1) x [i, i+1)) and maps are read there by
bilinear interpolation. Parts are 0..24 (0 background); U, V in [0, 1].

Normalization follows DensePose-RCNN: cross-entropies are means (over points, over pixels), the
smooth-L1 regression terms are sums over the batch's points (per device under DDP, as DensePose's per
GPU). The sum is what makes DensePose's weight of 0.01 work with U, V in [0, 1]: averaged over points
instead, that weight leaves U, V barely trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from densehmr.losses.quantize import encode


def sample_at_points(maps: Tensor, xy: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Bilinear values (B, P, C) of maps (B, C, h, w) at points xy (B, P, 2) in crop pixels of an
    (H, W) crop; points outside take the border value."""
    h, w = image_size
    grid = torch.stack([2.0 * xy[..., 0] / w - 1.0, 2.0 * xy[..., 1] / h - 1.0], -1)[:, :, None]
    out = F.grid_sample(
        maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[..., 0].transpose(1, 2)


def _take_part(values: Tensor, part: Tensor) -> Tensor:
    """values (B, P, 25, ...) at each point's part (B, P) -> (B, P, ...)."""
    index = part.long().view(*part.shape, 1, *([1] * (values.dim() - 3)))
    index = index.expand(*part.shape, 1, *values.shape[3:])
    return values.gather(2, index).squeeze(2)


def _valid_sum(per_point: Tensor, valid: Tensor) -> Tensor:
    """Sum of per_point (B, P) over the valid points."""
    return torch.where(valid, per_point, torch.zeros_like(per_point)).sum()


def part_cross_entropy(
    part_logits: Tensor, xy: Tensor, part: Tensor, valid: Tensor, image_size: tuple[int, int]
) -> Tensor:
    """Mean cross-entropy of part logits (B, 25, h, w) read at the valid points against their part (B, P)."""
    logits = sample_at_points(part_logits, xy, image_size)[valid]  # (N, 25)
    if logits.shape[0] == 0:
        return part_logits.sum() * 0.0
    return F.cross_entropy(logits, part[valid].long())


def uv_smooth_l1(
    u_maps: Tensor, v_maps: Tensor, xy: Tensor, part: Tensor, u: Tensor, v: Tensor, valid: Tensor,
    image_size: tuple[int, int], beta: float = 1.0,
) -> Tensor:
    """Smooth-L1 of the true part's U and V maps (B, 25, h, w) at the points against u, v (B, P),
    summed over U, V and the valid points."""
    u_hat = _take_part(sample_at_points(u_maps, xy, image_size), part)
    v_hat = _take_part(sample_at_points(v_maps, xy, image_size), part)
    per_point = F.smooth_l1_loss(u_hat, u, reduction="none", beta=beta) + F.smooth_l1_loss(
        v_hat, v, reduction="none", beta=beta
    )
    return _valid_sum(per_point, valid)


def _sample_bins(maps: Tensor, xy: Tensor, part: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Per-part per-bin maps (B, 25, K, h, w) read at the points, for each point's part: (B, P, K)."""
    b, parts, k, h, w = maps.shape
    flat = sample_at_points(maps.reshape(b, parts * k, h, w), xy, image_size)
    return _take_part(flat.view(b, -1, parts, k), part)


def quantized_uv_losses(
    u_bins: Tensor, u_res: Tensor, v_bins: Tensor, v_res: Tensor, xy: Tensor, part: Tensor, u: Tensor,
    v: Tensor, valid: Tensor, image_size: tuple[int, int], beta: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """DenseReg's terms for maps (B, 25, K, h, w) of bin scores and in-bin residuals of U and V:
    (mean bin cross-entropy over points and U/V, smooth-L1 of the true bin's residual summed over U, V
    and the valid points).

    The residual r = x K - b is in bin units; its error is divided by K before the smooth-L1, so that
    the term is in U, V units: a decoded coordinate off by d costs what `uv_smooth_l1` charges for d,
    and one `uv` weight means the same in the direct and the quantized mode (in bin units the
    quantized term would weigh K^2 times more)."""
    num_bins = u_bins.shape[2]
    ce_terms, res_terms = [], []
    for bins, res, target in ((u_bins, u_res, u), (v_bins, v_res, v)):
        true_bin, true_res = encode(target, num_bins)
        scores = _sample_bins(bins, xy, part, image_size)  # (B, P, K)
        residual = _sample_bins(res, xy, part, image_size).gather(-1, true_bin[..., None]).squeeze(-1)
        if valid.any():
            ce_terms.append(F.cross_entropy(scores[valid], true_bin[valid]))
        else:
            ce_terms.append(scores.sum() * 0.0)
        res_terms.append(
            F.smooth_l1_loss(residual / num_bins, true_res / num_bins, reduction="none", beta=beta)
        )
    return (ce_terms[0] + ce_terms[1]) / 2, _valid_sum(res_terms[0] + res_terms[1], valid)


def area_fractions(labels: Tensor, num_classes: int, size: tuple[int, int]) -> Tensor:
    """Each class's share of every output pixel (B, num_classes, h, w) float, from crop labels (B, H, W) long
    on an (h, w) grid covering the same crop. At an even ratio an output pixel's centre falls on the
    boundary between input pixels: reading one label there shifts the target by half an input pixel
    (the mask learned at stride 2 sat half a crop pixel up and left of the truth, leaving boundary points
    outside it); the fractions have no such tie."""
    one_hot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, size)


def coarse_segmentation_ce(logits: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
    """Mean per-pixel cross-entropy of coarse logits (B, C, h, w) against crop labels (B, H, W) long
    (0 background; the person mask for C = 2, DensePose's 14 coarse parts for C = 15), over the
    samples where keep (B,) is True; each output pixel's target is the classes' area fractions in it."""
    if not keep.any():
        return logits.sum() * 0.0
    target = area_fractions(labels[keep].long(), logits.shape[1], logits.shape[-2:])
    return F.cross_entropy(logits[keep].float(), target)
