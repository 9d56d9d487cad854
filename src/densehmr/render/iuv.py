"""DensePose IUV maps and masks from rasterized meshes.

This is the one mesh -> IUV path every mesh method uses for DensePose metrics: the visible surface
is rasterized and each pixel centre takes the part of its face and the face-corner (U, V)
interpolated with its barycentrics (perspective-correct for a perspective camera). Conventions of
the camera frame and pixel grid are those of `cameras`; parts are 1..24 with 0 for background.
"""

from __future__ import annotations

import torch
from torch import Tensor

from densehmr.body.assets import Charts
from densehmr.render.cameras import PerspectiveCamera
from densehmr.render.rasterize import Fragments, rasterize


def render_mask(fragments: Fragments) -> Tensor:
    """(B, H, W) bool, pixels covered by the mesh."""
    return fragments.face_idx >= 0


def render_iuv(fragments: Fragments, charts: Charts) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pixel DensePose labels: I (B, H, W) int64 in 0..24 (0 background) and U, V (B, H, W) in
    [0, 1] (0 on background), interpolated from `charts.face_uv` at the pixel centres."""
    mask = render_mask(fragments)
    face = fragments.face_idx.clamp(min=0)
    part = torch.where(mask, charts.face_part.to(face.device)[face], 0)
    corner_uv = charts.face_uv.to(fragments.bary)[face]  # (B, H, W, 3, 2)
    uv = (corner_uv * fragments.bary[..., None]).sum(-2).clamp(0.0, 1.0)
    uv = torch.where(mask[..., None], uv, 0.0)
    return part, uv[..., 0], uv[..., 1]


def _stack_iuv(fragments: Fragments, charts: Charts) -> Tensor:
    part, u, v = render_iuv(fragments, charts)
    return torch.stack([part.to(u.dtype), u, v], dim=1)


def mesh_to_iuv(verts: Tensor, charts: Charts, camera: PerspectiveCamera, image_size: tuple[int, int]) -> Tensor:
    """IUV image (B, 3, H, W) float (I, U, V) of meshes verts (B, V, 3), camera frame, metres."""
    screen = camera.to_screen(verts)
    fragments = rasterize(screen, charts.faces.to(verts.device), image_size, perspective_correct=True)
    return _stack_iuv(fragments, charts)


def screen_to_iuv(screen_verts: Tensor, charts: Charts, image_size: tuple[int, int]) -> Tensor:
    """IUV image (B, 3, H, W) float (I, U, V) of screen vertices (B, V, 3): pixel x, y and an
    orthographic depth (larger is farther, any offset), as from `weak_perspective_to_screen`."""
    depth = screen_verts[..., 2:3]
    # Shift depth to be positive: the rasterizer keeps only surfaces in front of the camera.
    depth = depth - depth.detach().amin(dim=1, keepdim=True) + 1.0
    screen = torch.cat([screen_verts[..., :2], depth], dim=-1)
    fragments = rasterize(screen, charts.faces.to(screen.device), image_size, perspective_correct=False)
    return _stack_iuv(fragments, charts)


def gt_mesh_iuv(
    verts: Tensor, cam_k: Tensor, has_mesh: Tensor, charts: Charts, crop_size: tuple[int, int], size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """IUV (B, 3, h, w) of GT meshes verts (B, V, 3) metres, camera frame, rendered by their crop cameras
    cam_k (B, 3, 3) crop px on an (h, w) grid covering the (H, W) crop, and which samples (B,) bool have
    one: has_mesh (a GT mesh and its own camera) and a positive focal. The others are zeros. Without
    gradients: a target."""
    k = cam_k.float()
    focal = k[:, [0, 1], [0, 1]]
    keep = has_mesh.bool() & (focal > 0).all(-1)
    ratio = torch.tensor([size[1] / crop_size[1], size[0] / crop_size[0]], device=k.device)
    # Samples without a camera are rendered too (then zeroed): a focal kept off 0 keeps them finite.
    camera = PerspectiveCamera(focal.clamp(min=1e-6) * ratio, k[:, :2, 2] * ratio)
    with torch.no_grad():
        iuv = mesh_to_iuv(verts.float(), charts, camera, size)
    return torch.where(keep[:, None, None, None], iuv, 0.0), keep
