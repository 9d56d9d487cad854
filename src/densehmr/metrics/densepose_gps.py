"""Geodesic point similarity (GPS) of DensePose predictions, vectorized.

DensePose's evaluator snaps every (I, U, V), true and predicted, to the nearest evaluation point of
the same part in UV space, takes the geodesic distance between the two evaluation points and scores
a point exp(-d² / (2κ²)). It loops in Python per part and per point; here one call handles every point
of every (detection, GT) pair: per part, chunked distance tables and argmin.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from densehmr.body.assets import NUM_PARTS, GeodesicEval

# The original DensePose evaluator's fixed normalizer (metres): d = 0.3 m scores 0.5.
FIXED_KAPPA = 0.255
# Distance-table entries per chunk when snapping (float64: 32 MiB).
_CHUNK_ELEMENTS = 1 << 22


def exact_kappa(mean_geodesic: Tensor) -> Tensor:
    """κ per coarse part (9,) as float64.

    The assets store κ in float32; DensePose's evaluator uses the decimals 0.351, 0.107, ... in float64.
    The shortest decimal that round-trips a float32 recovers such a decimal exactly (and for computed
    values it is as good as any other reading), so GPS values match the official ones to the last bit.
    """
    return torch.tensor([float(str(np.float32(v))) for v in mean_geodesic.tolist()], dtype=torch.float64)


def part_sorted_points(point_part: Tensor, point_uv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Evaluation points grouped by part for snapping.

    Returns (index (N,) int64 original point of each row, uv (N, 2) float64, start (NUM_PARTS + 2,)
    int64 with part p's rows at start[p]:start[p+1]). The grouping is stable, so within a part rows keep
    ascending point index and an argmin tie resolves to the lowest index, as DensePose's argmin does.
    """
    index = torch.sort(point_part, stable=True).indices
    counts = torch.bincount(point_part, minlength=NUM_PARTS + 1)[: NUM_PARTS + 1]
    start = torch.zeros(NUM_PARTS + 2, dtype=torch.long, device=point_part.device)
    start[1:] = counts.cumsum(0)
    return index, point_uv[index].double(), start


def snap_to_eval_points(part: Tensor, uv: Tensor, index: Tensor, sorted_uv: Tensor, start: Tensor) -> Tensor:
    """Nearest evaluation point (by UV distance, within the same part) of each surface point.

    part (P,) int64 (points with a part outside 1..24 get -1), uv (P, 2) float64;
    index / sorted_uv / start from part_sorted_points. Returns (P,) int64 evaluation point index.
    """
    out = torch.full_like(part, -1)
    bounds = start.tolist()
    # Group the points by part with one sort: part p's points follow those of every lower label.
    order = torch.sort(part, stable=True).indices
    counts = torch.bincount(part.clamp(min=0), minlength=NUM_PARTS + 1).tolist()
    first = int((part < 1).sum())
    for p in range(1, NUM_PARTS + 1):
        lo, hi = bounds[p], bounds[p + 1]
        rows = order[first : first + counts[p]]
        first += counts[p]
        if rows.numel() == 0 or hi == lo:
            continue
        tu, tv = sorted_uv[lo:hi, 0], sorted_uv[lo:hi, 1]
        step = max(1, _CHUNK_ELEMENTS // (hi - lo))
        for c in range(0, rows.numel(), step):
            sel = rows[c : c + step]
            q = uv[sel]
            # sqrt(du² + dv²), summed in this order, is scipy's cdist: near-ties break the same way.
            dist = (q[:, :1] - tu).square_()
            dist += (q[:, 1:] - tv).square_()
            out[sel] = index[lo + dist.sqrt_().argmin(1)]
    return out


def point_similarity(geodesic: GeodesicEval, kappa: Tensor, gt_point: Tensor, pred_point: Tensor) -> Tensor:
    """exp(-d² / (2κ²)) per point, float64 (P,).

    gt_point, pred_point (P,) evaluation point indices (pred -1: background or outside the box, d = ∞);
    kappa (9,) float64 per coarse part, chosen by the GT point's part.
    """
    pred = pred_point.clamp(min=0)
    # Coinciding table rows are at distance 0; kept away from GeodesicEval.distance, whose condensed
    # index for them can point one past the table's end.
    apart = geodesic.transform[gt_point] != geodesic.transform[pred]
    d = torch.zeros(gt_point.shape, dtype=torch.float64, device=gt_point.device)
    d[apart] = geodesic.distance(gt_point[apart], pred[apart]).double()
    d = torch.where(pred_point >= 0, d, torch.full_like(d, torch.inf))
    k = kappa[geodesic.coarse_parts[geodesic.point_part[gt_point]]]
    return torch.exp(-(d**2) / (2 * k**2))


def mean_per_group(values: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Mean of values (P,) per group (P,) int64 -> (num_groups,); an empty group scores 0 (DensePose's
    GPS of a GT without usable points)."""
    total = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, group, values)
    count = torch.bincount(group, minlength=num_groups).to(values.dtype)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
