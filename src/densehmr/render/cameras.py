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


def crop_intrinsics(
    cam_k: Tensor, image_size: tuple[int, int], default_focal: float, has_cam: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Focal (B, 2) and principal point (B, 2), crop px, of each sample's camera cam_k (B, 3, 3), or
    a default camera (focal `default_focal` px, centred) where a sample has none; and (B,) which had one."""
    k = cam_k.float()
    has = k[:, 0, 0] > 0
    if has_cam is not None:
        has = has & has_cam.bool()
    h, w = image_size
    focal = torch.where(has[:, None], k[:, [0, 1], [0, 1]], torch.full_like(k[:, 0, :2], default_focal))
    centre = k.new_tensor([w / 2.0, h / 2.0]).expand_as(focal)
    return focal, torch.where(has[:, None], k[:, :2, 2], centre), has


def crop_translation(cam: Tensor, focal: Tensor, principal: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Translation (B, 3) metres with which a perspective camera of focal (B, 2) and principal point (B, 2)
    crop px reproduces the weak-perspective cam (B, 3) at the body's depth. The principal point may be off
    the centre of the square (H, W) crop; the scale is kept positive so the depth stays finite."""
    h, w = image_size
    cam = torch.cat([cam[:, :1].clamp(min=1e-3), cam[:, 1:]], -1)
    transl = weak_perspective_to_translation(cam, focal[:, 0], w)
    offset = (principal - cam.new_tensor([w / 2.0, h / 2.0])) * transl[:, 2:] / focal
    return torch.cat([transl[:, :2] - offset, transl[:, 2:]], -1)
