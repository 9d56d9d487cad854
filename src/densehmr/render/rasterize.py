"""Hard z-buffer rasterization of triangle meshes, batched, in torch (CPU and CUDA).

Screen vertices are (x px, y px, z depth) in continuous pixel coordinates (pixel (i, j) covers
[j, j+1) x [i, i+1), centre (j + 0.5, i + 0.5)); see `cameras` for producing them. A pixel is
covered by a face when its centre lies in the face's closed triangle; among the covering faces with
positive depth there, the nearest wins (ties go to the lower face index). Back faces are kept:
the meshes are closed, so the nearest surface is the visible one whatever the winding.

Culling: each face meets only the pixels of its bounding box (`binning`); the z-test is one
scatter-min over those face-pixel slots of a 64-bit key (float32 depth bits, face index), exact
because the bit patterns of positive float32 numbers are ordered like the numbers. No gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densehmr.render.binning import bbox_blocks, chunk_size

_NO_FACE = torch.iinfo(torch.int64).max
_FACE_BITS = 32
# Tolerance on barycentrics for the inside test, so pixel centres on a shared edge are never lost.
_INSIDE_EPS = 1e-5
# Smallest |2 x area| (px^2) of a face that is rasterized at all.
_MIN_DET = 1e-10


@dataclass(frozen=True)
class Fragments:
    """What each pixel sees.

    face_idx: (B, H, W) int64 face index into the mesh's faces (0..F-1), -1 for background.
    bary:     (B, H, W, 3) barycentrics of the pixel centre on that face (0 for background);
              screen-space, or perspective-correct (camera-space) when rasterized so.
    zbuf:     (B, H, W) depth of the visible surface, inf for background.
    """

    face_idx: Tensor
    bary: Tensor
    zbuf: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, pixels covered by the mesh."""
        return self.face_idx >= 0


def _face_planes(tri: Tensor, perspective_correct: bool) -> tuple[Tensor, Tensor]:
    """Per-face coefficients for evaluating barycentrics and depth at pixel positions.

    tri: (K, 3, 3) screen triangles. Returns coeffs (9, K) float32 (one row per quantity, so that
    gathered rows stay contiguous) and ok (K,) bool, with coeffs = (v0x, v0y, a1, c1, a2, c2, q0, q1, q2):
    b1 = a1 dx + c1 dy, b2 = a2 dx + c2 dy for (dx, dy) = p - v0, and depth = sum b_k q_k, or
    1 / sum b_k q_k with q = 1 / z when perspective-correct.
    """
    x, y, z = tri.unbind(-1)  # (K, 3) each
    e1x, e1y, e2x, e2y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0], x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    det = e1x * e2y - e1y * e2x
    # A non-finite coordinate makes det non-finite; NaN depths fail the comparisons.
    ok = torch.isfinite(det) & (det.abs() > _MIN_DET) & (z[:, 0] > 0) & (z[:, 1] > 0) & (z[:, 2] > 0)
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    q = 1.0 / z if perspective_correct else z
    coeffs = torch.stack([x[:, 0], y[:, 0], e2y * inv, -e2x * inv, -e1y * inv, e1x * inv, q[:, 0], q[:, 1], q[:, 2]])
    return coeffs, ok


def _eval_planes(
    coeffs: Tensor, x: Tensor, y: Tensor, perspective_correct: bool
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    """Screen barycentrics (3 x (...)) and depth (...) at pixel positions x, y (...) for coeffs (9, ...)
    gathered (or broadcastable) to the same shape."""
    v0x, v0y, a1, c1, a2, c2, q0, q1, q2 = coeffs
    dx, dy = x - v0x, y - v0y
    b1 = a1 * dx + c1 * dy
    b2 = a2 * dx + c2 * dy
    b0 = 1.0 - b1 - b2
    s = b0 * q0 + b1 * q1 + b2 * q2
    return (b0, b1, b2), (1.0 / s if perspective_correct else s)


def rasterize(
    screen_verts: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective_correct: bool = False,
    max_slots: int | None = None,
) -> Fragments:
    """Rasterize a batch of meshes sharing one topology.

    screen_verts: (B, V, 3) pixel x, pixel y, depth z (> 0 in front of the camera). Faces with a
                  vertex at z <= 0 are dropped (they would need clipping against the near plane).
    faces:        (F, 3) int64.
    image_size:   (H, W).
    perspective_correct: z is camera depth under a perspective projection: interpolate 1/z in
                  screen space and return camera-space barycentrics. Otherwise z and barycentrics
                  are interpolated linearly in screen space (orthographic / weak perspective).
    max_slots:    face-pixel slots processed at once; `binning.chunk_size` by default.
    """
    height, width = image_size
    batch, num_faces = screen_verts.shape[0], faces.shape[0]
    if num_faces >= 1 << _FACE_BITS:
        raise ValueError(f"at most 2^{_FACE_BITS} faces, got {num_faces}")
    device = screen_verts.device
    max_slots = max_slots or chunk_size(device)
    with torch.no_grad():
        tri = screen_verts.detach()[:, faces].float()  # (B, F, 3, 3)
        coeffs, ok = _face_planes(tri.reshape(-1, 3, 3), perspective_correct)
        xy = tri[..., :2]
        lo = torch.minimum(torch.minimum(xy[:, :, 0], xy[:, :, 1]), xy[:, :, 2])
        hi = torch.maximum(torch.maximum(xy[:, :, 0], xy[:, :, 1]), xy[:, :, 2])

        keys = torch.full((batch * height * width,), _NO_FACE, dtype=torch.int64, device=device)
        for block in bbox_blocks(lo, hi, ok.view(batch, num_faces), image_size, max_slots):
            c = coeffs.index_select(1, block.face)[..., None]  # (9, K, 1)
            x = (block.col0.float() + 0.5)[:, None] + block.slot_col
            y = (block.row0.float() + 0.5)[:, None] + block.slot_row
            (b0, b1, b2), depth = _eval_planes(c, x, y, perspective_correct)
            hit = (b0 >= -_INSIDE_EPS) & (b1 >= -_INSIDE_EPS) & (b2 >= -_INSIDE_EPS) & (depth > 0)
            key = (depth.view(torch.int32).long() << _FACE_BITS) | (block.face % num_faces)[:, None]
            key = torch.where(hit & block.mask, key, _NO_FACE)
            keys.scatter_reduce_(0, block.pixel.flatten(), key.flatten(), reduce="amin")

        covered = keys != _NO_FACE
        face_idx = torch.where(covered, keys & ((1 << _FACE_BITS) - 1), -1)
        pix = covered.nonzero().squeeze(1)
        face = face_idx[pix] + torch.div(pix, height * width, rounding_mode="floor") * num_faces
        rem = pix % (height * width)
        row = torch.div(rem, width, rounding_mode="floor")
        col = rem - row * width
        c = coeffs.index_select(1, face)
        bary, depth = _eval_planes(c, col.float() + 0.5, row.float() + 0.5, perspective_correct)
        bary = torch.stack(bary, dim=1)
        if perspective_correct:
            bary = bary * c[6:9].t() * depth[:, None]

        dtype = screen_verts.dtype
        bary_out = torch.zeros(batch * height * width, 3, dtype=dtype, device=device)
        bary_out[pix] = bary.to(dtype)
        zbuf = torch.full((batch * height * width,), float("inf"), dtype=dtype, device=device)
        zbuf[pix] = depth.to(dtype)
    return Fragments(
        face_idx=face_idx.view(batch, height, width),
        bary=bary_out.view(batch, height, width, 3),
        zbuf=zbuf.view(batch, height, width),
    )
