"""Losses of dense IUV maps against a dense target IUV image (PyMAF's auxiliary DensePose supervision).

Scaled as PyMAF's trainer scales them: the part and coarse-part cross-entropies are means over every
pixel (background included) of the samples that have a target; the U, V smooth-L1 of each pixel's true
part channel (the background's channel 0 against U = V = 0) is summed over those pixels and divided by
the whole batch size, so it grows with the map resolution (PyMAF: 56 x 56) and outweighs a
foreground-averaged term by about the number of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked_ce(logits: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, C, h, w) against labels (B, h, w) over the kept samples (B,)."""
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


def iuv_map_losses(
    part_logits: Tensor,
    coarse_logits: Tensor,
    u_maps: Tensor,
    v_maps: Tensor,
    target: Tensor,
    keep: Tensor,
    coarse_of_part: Tensor,
    beta: float = 1.0,
) -> dict[str, Tensor]:
    """PyMAF's three auxiliary terms, unweighted.

    part_logits (B, 25, h, w), coarse_logits (B, 15, h, w), u_maps, v_maps (B, 25, h, w): the maps.
    target (B, 3, h, w): I (0..24, 0 background), U, V in [0, 1] (0 on background), on the maps' grid.
    keep (B,) bool: samples with a target. coarse_of_part (25,) int64: each part's coarse part 0..14.
    Returns part (mean CE), coarse (mean CE) and uv (sum over kept pixels of the U and V smooth-L1,
    divided by B).
    """
    part = target[:, 0].round().long()
    index = part[:, None]
    u_hat = u_maps.gather(1, index)[:, 0]
    v_hat = v_maps.gather(1, index)[:, 0]
    per_pixel = F.smooth_l1_loss(u_hat, target[:, 1], reduction="none", beta=beta) + F.smooth_l1_loss(
        v_hat, target[:, 2], reduction="none", beta=beta
    )
    uv = torch.where(keep[:, None, None], per_pixel, torch.zeros_like(per_pixel)).sum() / part.shape[0]
    return {
        "part": _masked_ce(part_logits, part, keep),
        "coarse": _masked_ce(coarse_logits, coarse_of_part.to(part.device)[part], keep),
        "uv": uv,
    }
