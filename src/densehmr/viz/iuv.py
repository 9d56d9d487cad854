"""Pictures of DensePose IUV maps: colour per part, modulated by U and V, and side-by-side panels."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor

# Colour of each part 0..24 (0 background, black): tab20 then 4 more, RGB in [0, 1].
PART_COLOURS = torch.tensor(
    [[0.0, 0.0, 0.0]]
    + [list(c) for c in colormaps["tab20"].colors]
    + [[0.2, 0.2, 0.2], [0.6, 0.3, 0.0], [0.0, 0.4, 0.4], [0.5, 0.0, 0.5]],
    dtype=torch.float32,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def iuv_to_colour(iuv: Tensor) -> Tensor:
    """RGB in [0, 1] (..., 3, H, W) of IUV maps (..., 3, H, W) (I 0..24, U, V in [0, 1]).

    Half the colour is the part's, half is (U, V, 1 - U), so both the parts and the chart
    coordinates inside a part are visible; background is black.
    """
    part = iuv[..., 0, :, :].round().long().clamp(0, PART_COLOURS.shape[0] - 1)
    u, v = iuv[..., 1, :, :].clamp(0, 1), iuv[..., 2, :, :].clamp(0, 1)
    base = PART_COLOURS.to(iuv.device)[part].movedim(-1, -3)  # (..., 3, H, W)
    coord = torch.stack([u, v, 1.0 - u], dim=-3)
    fg = (part > 0).unsqueeze(-3).to(iuv.dtype)
    return fg * (0.5 * base + 0.5 * coord)


def iuv_to_rgb(iuv: Tensor) -> np.ndarray:
    """uint8 picture (H, W, 3), or (B, H, W, 3) for a batch, of IUV maps (3, H, W) / (B, 3, H, W)."""
    rgb = iuv_to_colour(iuv.detach().float().cpu())
    return to_uint8(rgb.movedim(-3, -1))


def points_to_iuv(xy: Tensor, part: Tensor, u: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
    """IUV map (3, H, W) with each DensePose point (P,) at its crop pixel (xy (P, 2) px), zeros elsewhere."""
    h, w = size
    iuv = torch.zeros(3, h, w, dtype=torch.float32)
    col = xy[:, 0].detach().cpu().floor().long()
    row = xy[:, 1].detach().cpu().floor().long()
    keep = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (part.cpu() > 0)
    vals = torch.stack([part.cpu().float(), u.detach().cpu().float(), v.detach().cpu().float()])
    iuv[:, row[keep], col[keep]] = vals[:, keep]
    return iuv


def annotated_iuv(batch: dict, i: int, size: tuple[int, int]) -> Tensor:
    """IUV map (3, H, W) of sample i's valid annotated DensePose points (batch keys `dp_*`), zeros elsewhere."""
    valid = batch["dp_valid"][i]
    return points_to_iuv(
        batch["dp_xy"][i][valid], batch["dp_I"][i][valid], batch["dp_U"][i][valid], batch["dp_V"][i][valid], size
    )


def denormalize_image(image: Tensor) -> np.ndarray:
    """uint8 (H, W, 3) of an ImageNet-normalized image (3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return to_uint8((image.detach().float().cpu() * std + mean).permute(1, 2, 0))


def to_uint8(rgb: Tensor) -> np.ndarray:
    """uint8 array of colours in [0, 1]."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def side_by_side(panels: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """One (H, sum W + gaps, 3) uint8 picture of equally tall (H, W, 3) panels, white gaps between."""
    h = panels[0].shape[0]
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for i, panel in enumerate(panels):
        if i:
            row.append(spacer)
        row.append(panel)
    return np.concatenate(row, axis=1)
