"""Person masks on the image canvas for DensePose's GPSm and IoU modes.

As DensePose's evaluator: a GT mask comes from its 14 `dp_masks` (256×256, union, bilinear zoom to the
box, > 0.5), else from its `segmentation`, else it is empty; a detection's mask is its I > 0 over its
box. Both are pasted at (int(x), int(y)) and clipped to the image, and compared with pycocotools'
mask IoU. GT masks are decoded on the CPU (pycocotools, scipy); the pasted masks are torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy.ndimage import zoom
from torch import Tensor

DP_MASK_SIZE = 256
NUM_DP_MASKS = 14


@dataclass(frozen=True)
class PlacedMask:
    """A binary mask pasted on the image: mask (h, w) bool with its top-left pixel at (x0, y0);
    area its pixel count."""

    x0: int
    y0: int
    mask: Tensor
    area: int

    @classmethod
    def at(cls, x0: int, y0: int, mask: Tensor) -> PlacedMask:
        mask = mask.bool()
        return cls(x0, y0, mask, int(mask.count_nonzero()))

    def to(self, device: torch.device | str) -> PlacedMask:
        return PlacedMask(self.x0, self.y0, self.mask.to(device), self.area)


def paste(mask: Tensor, bbox: Sequence[float], image_hw: tuple[int, int]) -> PlacedMask:
    """Paste a box-relative mask (h, w) at the box's integer corner, clipped to the image (H, W)."""
    x, y, w, h = (float(v) for v in bbox)
    im_h, im_w = image_hw
    xi, yi = int(x), int(y)
    x0, y0 = max(xi, 0), max(yi, 0)
    x1 = min(int(x + w), im_w, xi + mask.shape[1])
    y1 = min(int(y + h), im_h, yi + mask.shape[0])
    x1, y1 = max(x1, x0), max(y1, y0)
    return PlacedMask.at(x0, y0, mask[y0 - yi : y1 - yi, x0 - xi : x1 - xi])


def _empty(entry) -> bool:
    return entry is None or (isinstance(entry, (list, dict)) and not entry)


def dp_mask_union(entries: Sequence) -> np.ndarray:
    """Union (256, 256) float64 0/1 of the first 14 dp_masks entries (RLE dicts, decoded arrays, or
    empty entries, which DensePose skips)."""
    entries = [e for e in list(entries)[:NUM_DP_MASKS] if not _empty(e)]
    rles = [dict(e) for e in entries if isinstance(e, Mapping)]
    union = np.zeros((DP_MASK_SIZE, DP_MASK_SIZE), dtype=bool)
    if rles:
        union |= mask_utils.decode(mask_utils.merge(rles, intersect=False)) > 0
    for e in entries:
        if not isinstance(e, Mapping):
            union |= np.asarray(e) > 0
    return union.astype(np.float64)


def gt_mask(ann: Mapping, image_hw: tuple[int, int]) -> PlacedMask:
    """GT person mask of a DensePose-COCO annotation, pasted on the image (H, W)."""
    im_h, im_w = image_hw
    if "dp_masks" in ann:
        _, _, w, h = (float(v) for v in ann["bbox"])
        scale = (max(h, 1.0) / DP_MASK_SIZE, max(w, 1.0) / DP_MASK_SIZE)
        box_mask = zoom(dp_mask_union(ann["dp_masks"]), scale, order=1, prefilter=False) > 0.5
        return paste(torch.from_numpy(box_mask), ann["bbox"], image_hw)
    segm = ann.get("segmentation")
    if isinstance(segm, list) and segm:
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, im_h, im_w))
    elif isinstance(segm, Mapping):
        uncompressed = isinstance(segm["counts"], list)
        rle = mask_utils.frPyObjects(dict(segm), im_h, im_w) if uncompressed else dict(segm)
    else:
        return PlacedMask.at(0, 0, torch.zeros(0, 0, dtype=torch.bool))
    return PlacedMask.at(0, 0, torch.from_numpy(mask_utils.decode(rle) > 0))


def placed_iou(det: PlacedMask, gt: PlacedMask, crowd: bool) -> Tensor:
    """pycocotools' mask IoU of two pasted masks (0 without overlap; a crowd GT's union is the
    detection's area). Both masks on one device; returns a 0-dim float64 tensor there."""
    x0, y0 = max(det.x0, gt.x0), max(det.y0, gt.y0)
    x1 = min(det.x0 + det.mask.shape[1], gt.x0 + gt.mask.shape[1])
    y1 = min(det.y0 + det.mask.shape[0], gt.y0 + gt.mask.shape[0])
    dev = det.mask.device
    if x1 <= x0 or y1 <= y0:
        return torch.zeros((), dtype=torch.float64, device=dev)
    a = det.mask[y0 - det.y0 : y1 - det.y0, x0 - det.x0 : x1 - det.x0]
    b = gt.mask[y0 - gt.y0 : y1 - gt.y0, x0 - gt.x0 : x1 - gt.x0]
    inter = (a & b).count_nonzero().double()
    union = float(det.area) if crowd else det.area + gt.area - inter
    return torch.where(inter > 0, inter / union, torch.zeros_like(inter))
