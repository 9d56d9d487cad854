"""The pretraining objective: targets from a batch (datamodules/collate.py's contract), losses, metrics.

Every term is read where the batch supervises it (has_mask_parts, keypoint visibility, dp_valid, has_kp3d)
and is zero when nothing in the batch supervises it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from densehmr.losses.densepose import area_fractions
from densehmr.pretrain.network import NUM_PART_CLASSES, sample_map

IGNORE = -100
HEATMAP_SIGMA = 1.0  # Gaussian of a keypoint's target, in stride-4 cells (4 crop px)
PCK_FRACTION = 0.1  # a keypoint is correct within this fraction of the crop's longer side
SMOOTH_L1_BETA = 0.02  # metres: L1 beyond 2 cm


def part_targets(batch: dict, size: tuple[int, int]) -> Tensor:
    """(B, h, w) long: the coarse part 0..14 covering most of each stride-4 cell, IGNORE where unannotated.
    (Nearest-neighbour resizing would read each cell's top-left pixel: a target 1.5 crop px up and left.)"""
    labels = area_fractions(batch["mask_parts"].long(), NUM_PART_CLASSES, size).argmax(1)
    labels[~batch["has_mask_parts"].bool()] = IGNORE
    return labels


def keypoint_targets(kp2d: Tensor, size: tuple[int, int], stride: int) -> tuple[Tensor, Tensor]:
    """Normalized Gaussian heatmaps of COCO keypoints.

    kp2d (B, K, 3) crop px + visibility -> target (B, K, h*w) summing to 1, valid (B, K) bool: visible and
    inside the crop.
    """
    h, w = size
    xy = (kp2d[..., :2] + 0.5) / stride - 0.5  # cell coordinates, cell centres at integers
    valid = (kp2d[..., 2] > 0) & (xy[..., 0] > -0.5) & (xy[..., 0] < w - 0.5) & (xy[..., 1] > -0.5)
    valid &= xy[..., 1] < h - 0.5
    ys = torch.arange(h, dtype=xy.dtype, device=xy.device)
    xs = torch.arange(w, dtype=xy.dtype, device=xy.device)
    dy = ys[None, None, :, None] - xy[..., 1, None, None]
    dx = xs[None, None, None, :] - xy[..., 0, None, None]
    d2 = dy**2 + dx**2
    target = torch.exp(-d2 / (2 * HEATMAP_SIGMA**2)).flatten(2)
    return target / target.sum(-1, keepdim=True).clamp(min=1e-12), valid


def surface_targets(batch: dict, template: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Template-mesh position of each annotated DensePose point.

    template (V, 3) metres, faces (F, 3) of the full mesh -> (B, P, 3) metres, valid (B, P) bool.
    """
    corners = template[faces[batch["dp_face"]]]  # (B, P, 3 corners, 3)
    return (batch["dp_bary"][..., None] * corners).sum(-2), batch["dp_valid"].bool()


def joints3d_targets(batch: dict) -> tuple[Tensor, Tensor]:
    """(B, 17, 3) H36M-17 joints minus the pelvis, metres; valid (B, 17) bool."""
    joints = batch["kp3d"][..., :3]
    valid = batch["has_kp3d"].bool()[:, None] & (batch["kp3d"][..., 3] > 0) & (batch["kp3d"][:, :1, 3] > 0)
    return joints - joints[:, :1], valid


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    return (values * valid).sum() / valid.sum().clamp(min=1)


def loss_terms(out: dict[str, Tensor], batch: dict, template: Tensor, faces: Tensor) -> dict[str, Tensor]:
    """Unweighted losses: parts (cross-entropy per cell), keypoints (cross-entropy of each keypoint's
    spatial softmax against its Gaussian), surface and joints3d (smooth L1 in metres, per coordinate)."""
    size = tuple(out["parts"].shape[-2:])
    stride = batch["image"].shape[-1] // size[1]
    parts = part_targets(batch, size)
    terms = {"parts": F.cross_entropy(out["parts"], parts, ignore_index=IGNORE) if (parts != IGNORE).any()
             else out["parts"].sum() * 0}
    target, valid = keypoint_targets(batch["kp2d"], size, stride)
    ce = -(target * F.log_softmax(out["heatmaps"].flatten(2), dim=-1)).sum(-1)
    terms["keypoints"] = _masked_mean(ce, valid)
    surface, valid = surface_targets(batch, template, faces)
    predicted = sample_map(out["surface"], batch["dp_xy"], stride)
    error = F.smooth_l1_loss(predicted, surface, beta=SMOOTH_L1_BETA, reduction="none").mean(-1)
    terms["surface"] = _masked_mean(error, valid)
    joints, valid = joints3d_targets(batch)
    error = F.smooth_l1_loss(out["joints3d"], joints, beta=SMOOTH_L1_BETA, reduction="none").mean(-1)
    terms["joints3d"] = _masked_mean(error, valid)
    return terms


def heatmap_argmax(heatmaps: Tensor, stride: int) -> Tensor:
    """(B, K, h, w) -> (B, K, 2) crop px of each map's maximum."""
    w = heatmaps.shape[-1]
    index = heatmaps.flatten(2).argmax(-1)
    cells = torch.stack([index % w, index // w], dim=-1).to(heatmaps.dtype)
    return (cells + 0.5) * stride - 0.5


def batch_statistics(out: dict[str, Tensor], batch: dict, template: Tensor, faces: Tensor) -> dict[str, Tensor]:
    """Sums for the held-out metrics: part confusion (15, 15) over annotated cells (rows: truth),
    correct and counted keypoints, summed surface and 3D joint errors (metres) with their counts."""
    size = tuple(out["parts"].shape[-2:])
    stride = batch["image"].shape[-1] // size[1]
    parts = part_targets(batch, size)
    labelled = parts != IGNORE
    classes = out["parts"].shape[1]
    guess = out["parts"].argmax(1)
    confusion = torch.bincount(parts[labelled] * classes + guess[labelled], minlength=classes**2).view(classes, -1)
    _, valid = keypoint_targets(batch["kp2d"], size, stride)
    distance = (heatmap_argmax(out["heatmaps"], stride) - batch["kp2d"][..., :2]).norm(dim=-1)
    correct = (distance < PCK_FRACTION * max(batch["image"].shape[-2:])) & valid
    surface, svalid = surface_targets(batch, template, faces)
    surface_error = (sample_map(out["surface"], batch["dp_xy"], stride) - surface).norm(dim=-1)
    joints, jvalid = joints3d_targets(batch)
    joint_error = (out["joints3d"] - joints).norm(dim=-1)
    return {
        "confusion": confusion,
        "pck_correct": correct.sum(), "pck_count": valid.sum(),
        "surface_error": (surface_error * svalid).sum(), "surface_count": svalid.sum(),
        "joint_error": (joint_error * jvalid).sum(), "joint_count": jvalid.sum(),
    }


def summarize(totals: dict[str, Tensor]) -> dict[str, float]:
    """Held-out metrics from summed statistics: part pixel accuracy and mean IoU (%, classes that occur),
    PCK (%), surface error and MPJPE (mm, pelvis-relative, no alignment)."""
    confusion = totals["confusion"].double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = confusion.sum(1) > 0
    return {
        "parts/pixel_acc": float(100 * true_positive.sum() / confusion.sum().clamp(min=1)),
        "parts/miou": float(100 * (true_positive[present] / union[present]).mean()) if present.any() else 0.0,
        "keypoints/pck": float(100 * totals["pck_correct"] / totals["pck_count"].clamp(min=1)),
        "surface/error_mm": float(1000 * totals["surface_error"] / totals["surface_count"].clamp(min=1)),
        "joints3d/mpjpe_mm": float(1000 * totals["joint_error"] / totals["joint_count"].clamp(min=1)),
    }
