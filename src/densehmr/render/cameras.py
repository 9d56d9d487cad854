"""Cameras: pinhole perspective and HMR-style weak perspective.

Conventions used by the whole renderer:
- Camera frame is OpenCV's: x right, y down, z forward, metres.
- Continuous pixel coordinates: pixel (row i, col j) covers [j, j+1) x [i, i+1); its centre is
  (x, y) = (j + 0.5, i + 0.5). A principal point of (W/2, H/2) is the image centre.
- Weak perspective as in HMR/SPIN/PyMAF: cam = (s, tx, ty); normalized crop coordinates
  ndc = s * (X_xy + t) in [-1, 1] of a square crop of `size` px; pixels = (ndc + 1) / 2 * size.
  It is the limit of a perspective camera with focal f (px), principal point at the crop centre and
  translation (tx, ty, tz), tz = 2 f / (size * s) (SPIN's conversion, f = 5000 px there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PerspectiveCamera:
    """Pinhole camera without distortion.

    focal:     (B, 2) px, (fx, fy).
    principal: (B, 2) px, (cx, cy) in continuous pixel coordinates.
    """

    focal: Tensor
    principal: Tensor

    @classmethod
    def for_crop(
        cls,
        focal: float,
        size: int,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PerspectiveCamera:
        """Square-pixel camera with its principal point at the centre of a `size` x `size` crop."""
        f = torch.full((batch, 2), float(focal), device=device, dtype=dtype)
        c = torch.full((batch, 2), size / 2.0, device=device, dtype=dtype)
        return cls(f, c)

    def to(self, device: torch.device | str) -> PerspectiveCamera:
        return PerspectiveCamera(self.focal.to(device), self.principal.to(device))

    def project(self, points: Tensor) -> Tensor:
        """Pixel coordinates (B, N, 2) of camera-frame points (B, N, 3) metres (z > 0)."""
        return self.focal[:, None] * points[..., :2] / points[..., 2:3] + self.principal[:, None]

    def to_screen(self, points: Tensor) -> Tensor:
        """Screen vertices (B, N, 3): pixel x, pixel y and camera depth z (metres), for `rasterize`."""
        return torch.cat([self.project(points), points[..., 2:3]], dim=-1)


def weak_perspective_project(points: Tensor, cam: Tensor, size: int) -> Tensor:
    """Pixel coordinates (B, N, 2) in a `size` px square crop of points (B, N, 3) under cam (B, 3)."""
    ndc = cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])
    return (ndc + 1.0) * (size / 2.0)


def weak_perspective_to_screen(points: Tensor, cam: Tensor, size: int) -> Tensor:
    """Screen vertices (B, N, 3): weak-perspective pixels and the points' own z as (orthographic) depth."""
    return torch.cat([weak_perspective_project(points, cam, size), points[..., 2:3]], dim=-1)


def weak_perspective_to_translation(cam: Tensor, focal: float | Tensor, size: int) -> Tensor:
    """Perspective translation (B, 3) metres (tx, ty, 2 f / (size s)) equivalent to cam (B, 3), s > 0."""
    tz = 2.0 * focal / (size * cam[:, 0])
    return torch.stack([cam[:, 1], cam[:, 2], tz], dim=-1)


def translation_to_weak_perspective(transl: Tensor, focal: float | Tensor, size: int) -> Tensor:
    """Weak-perspective cam (B, 3) (2 f / (size tz), tx, ty) from a translation (B, 3) metres, tz > 0."""
    s = 2.0 * focal / (size * transl[:, 2])
    return torch.stack([s, transl[:, 0], transl[:, 1]], dim=-1)
