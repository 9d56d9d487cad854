"""Pictures of a predicted mesh: shaded over the image, seen from the side, and heatmaps over the image.

All take and return uint8 (H, W, 3) numpy pictures (for loggers and PNG files); meshes are given in
"screen" form: (N, 3) pixel x, pixel y and a depth that grows away from the viewer (any offset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from densehmr.render.rasterize import rasterize

MESH_COLOUR = (0.55, 0.7, 0.95)


def shade_mesh(screen_verts: Tensor, faces: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Flat Lambert-like shade (H, W) in [0.35, 1] facing the viewer and coverage (H, W) bool of one mesh."""
    screen = screen_verts.detach().float().cpu()
    faces = faces.detach().long().cpu()
    depth = screen[:, 2] - screen[:, 2].min() + 1.0  # the rasterizer keeps positive depths only
    screen = torch.cat([screen[:, :2], depth[:, None]], dim=-1)
    fragments = rasterize(screen[None], faces, size, perspective_correct=False)
    tri = screen[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    facing = normal[:, 2].abs() / normal.norm(dim=-1).clamp(min=1e-12)
    face = fragments.face_idx[0]
    covered = face >= 0
    shade = torch.where(covered, 0.35 + 0.65 * facing[face.clamp(min=0)], torch.zeros_like(facing[0]))
    return shade, covered


def mesh_overlay(picture: np.ndarray, screen_verts: Tensor, faces: Tensor, alpha: float = 0.7) -> np.ndarray:
    """The shaded mesh blended over picture (H, W, 3) uint8."""
    h, w = picture.shape[:2]
    shade, covered = shade_mesh(screen_verts, faces, (h, w))
    colour = shade[..., None].numpy() * np.array(MESH_COLOUR)[None, None] * 255.0
    a = alpha * covered.numpy()[..., None]
    return (picture * (1 - a) + colour * a).round().clip(0, 255).astype(np.uint8)


def side_view(screen_verts: Tensor, faces: Tensor, size: tuple[int, int]) -> np.ndarray:
    """The mesh seen from its right (a quarter turn about the vertical through its centre), on white."""
    v = screen_verts.detach().float().cpu()
    centre = (v.amax(0) + v.amin(0)) / 2
    h, w = size
    side = torch.stack([v[:, 2] - centre[2] + w / 2, v[:, 1], centre[0] - v[:, 0]], dim=-1)
    shade, covered = shade_mesh(side, faces, size)
    colour = shade[..., None].numpy() * np.array(MESH_COLOUR)[None, None] * 255.0
    out = np.where(covered.numpy()[..., None], colour, 255.0)
    return out.round().clip(0, 255).astype(np.uint8)


def heatmap_overlay(picture: np.ndarray, heatmap: Tensor, point: Tensor | None = None) -> np.ndarray:
    """A heatmap (h, w) >= 0 (normalized to its max, square-rooted so that its spread shows, upsampled)
    over a darkened grey picture (H, W, 3), with an optional point (x, y) px marked by a cyan cross."""
    h, w = picture.shape[:2]
    heat = heatmap.detach().float().cpu()
    heat = (heat / heat.max().clamp(min=1e-12)).sqrt()
    heat = F.interpolate(heat[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    colour = colormaps["inferno"](heat.numpy())[..., :3] * 255.0
    grey = 0.5 * picture.mean(-1, keepdims=True)
    a = heat.numpy()[..., None]
    out = grey * (1 - a) + colour * a
    if point is not None:
        x, y = (int(c) for c in point.detach().cpu().floor().tolist())
        for dx, dy in ((-3, 0), (-2, 0), (2, 0), (3, 0), (0, -3), (0, -2), (0, 2), (0, 3)):  # a cross, open centre
            if 0 <= x + dx < w and 0 <= y + dy < h:
                out[y + dy, x + dx] = (0, 255, 255)
    return out.round().clip(0, 255).astype(np.uint8)


def save_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write picture (H, W, 3) uint8 to a PNG file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path
