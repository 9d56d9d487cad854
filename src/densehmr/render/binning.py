"""Culling for both rasterizers: each face meets only the pixels of its bounding box.

Faces are grouped by the shape of their (clipped) bounding boxes, padded to a few shared shapes
(under 1/8 padding, except in small groups), and each group is processed as a dense block of shape
(faces, slots): per-face constants broadcast along the slots and per-slot offsets along the faces,
so no per-pair gather is needed and work stays proportional to the summed box areas (plus the
padding), never to pixels x faces.
Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5) (continuous pixel coordinates).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


def chunk_size(device: torch.device) -> int:
    """Face-pixel slots processed at once: small on CPU, where the temporaries then stay in cache,
    large on GPUs, where every launch should have work for the whole device."""
    return 1 << 20 if device.type == "cuda" else 1 << 16


@dataclass(frozen=True)
class FaceBlock:
    """Faces whose boxes share one padded shape, with one slot per pixel of that shape.

    face:     (K,) int64 index into the flattened (B * F) faces, b * F + f.
    row0:     (K,) int64 first pixel row of each face's box; col0 likewise.
    slot_row: (S,) int64 row offset of each slot inside the box, S = box_h * box_w; slot_col likewise.
    mask:     (K, S) bool, slots inside the face's actual box (and so inside the image).
    pixel:    (K, S) int64 index into the flattened (B * H * W) pixels (0 where masked out).
    """

    face: Tensor
    row0: Tensor
    col0: Tensor
    slot_row: Tensor
    slot_col: Tensor
    mask: Tensor
    pixel: Tensor


def _centre_range(lo: Tensor, hi: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First index and count of pixels (along one axis) whose centres lie in [lo, hi] px, clipped."""
    # Clamping before rounding keeps huge coordinates (points near the camera plane) castable.
    first = torch.ceil(lo.clamp(-1.0, size + 1.0) - 0.5).clamp(min=0)
    last = torch.floor(hi.clamp(-1.0, size + 1.0) - 0.5).clamp(max=size - 1)
    return first.long(), (last - first + 1).clamp(min=0).long()


def _group_shapes(shapes: list[tuple[int, int, int]], waste: float, small: int) -> list[tuple[int, int, int]]:
    """Merge consecutive box shapes (h, w, count), sorted by area, into padded groups
    (max h, max w, count) while the padding stays within `waste` of the group's true slots, or the
    group stays under `small` slots (where per-block overhead outweighs padding)."""
    groups: list[tuple[int, int, int]] = []
    cur_h = cur_w = cur_n = cur_true = 0
    for h, w, n in shapes:
        new_h, new_w, new_n, new_true = max(cur_h, h), max(cur_w, w), cur_n + n, cur_true + n * h * w
        padded = new_n * new_h * new_w
        if cur_n and padded > (1.0 + waste) * new_true and padded > small:
            groups.append((cur_h, cur_w, cur_n))
            new_h, new_w, new_n, new_true = h, w, n, n * h * w
        cur_h, cur_w, cur_n, cur_true = new_h, new_w, new_n, new_true
    groups.append((cur_h, cur_w, cur_n))
    return groups


def bbox_blocks(
    lo: Tensor, hi: Tensor, valid: Tensor, image_size: tuple[int, int], max_slots: int
) -> Iterator[FaceBlock]:
    """Yield blocks of faces covering every valid face's bounding box.

    lo, hi:    (B, F, 2) px, (x, y) bounding-box corners of each face.
    valid:     (B, F) bool, faces to consider at all.
    image_size: (H, W), each below 2^16 px.
    max_slots: soft bound on faces x slots per block (a block holds at least one face).
    """
    height, width = image_size
    col0, ncol = _centre_range(lo[..., 0], hi[..., 0], width)
    row0, nrow = _centre_range(lo[..., 1], hi[..., 1], height)
    keep = (valid & (ncol > 0) & (nrow > 0)).flatten().nonzero().squeeze(1)
    if keep.numel() == 0:
        return
    image = torch.arange(lo.shape[0], device=lo.device)[:, None]
    base = (image * (height * width) + row0 * width + col0).flatten()[keep]
    col0, ncol, row0, nrow = (t.flatten()[keep] for t in (col0, ncol, row0, nrow))

    # Boxes are sorted by area, then shape (h, w < 2^16 px), and merged into a few padded shapes.
    shape_key = ((nrow * ncol) << 32) | (nrow << 16) | ncol
    order = torch.argsort(shape_key)
    keys, counts = torch.unique_consecutive(shape_key[order], return_counts=True)
    shapes = [((k >> 16) & 0xFFFF, k & 0xFFFF, n) for k, n in zip(keys.tolist(), counts.tolist(), strict=True)]
    start = 0
    for bh, bw, count in _group_shapes(shapes, waste=0.125, small=4096):
        slots = torch.arange(bh * bw, device=lo.device)
        slot_row, slot_col = slots // bw, slots % bw
        per_block = max(1, max_slots // (bh * bw))
        for a in range(start, start + count, per_block):
            idx = order[a : min(a + per_block, start + count)]
            mask = (slot_row < nrow[idx, None]) & (slot_col < ncol[idx, None])
            pixel = base[idx, None] + slot_row * width + slot_col
            yield FaceBlock(
                face=keep[idx],
                row0=row0[idx],
                col0=col0[idx],
                slot_row=slot_row,
                slot_col=slot_col,
                mask=mask,
                pixel=torch.where(mask, pixel, 0),
            )
        start += count
