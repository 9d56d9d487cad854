"""MeshPose's "general HMR" predictions scored on DensePose, the way MeshPose's evaluator scores a mesh.

A record {`image_id`, `id` (its GT annotation), `smpl_xy_proj` (V, 2) image pixels, `smpl_z` (V,) a
depth, larger is farther, any offset and scale} is the body's mesh in the image. It is rendered
orthographically with the body's DensePose charts over the GT box (pixels int(x) .. int(x) + int(w),
likewise y; nothing outside the image) and becomes a detection with the GT's box, score 1 and the
GT's category.

Protocols: "gt_mask" (MeshPose's, the default for meshes) keeps the rendered IUV, and so the mask the
IoU and GPSm modes compare, only inside the GT person mask: the annotation's 14 `dp_masks` (256 x
256) resized to the box by nearest neighbour (OpenCV's, as MeshPose's evaluator). An annotation
without `dp_masks` carries no DensePose points and its record is skipped, as MeshPose's evaluation
README says. "unmasked" scores the rendering as it is. GPS differs between the two only at GT points
outside the GT mask (which lose their prediction under gt_mask); GPSm and IoU differ wherever the
rendering leaves the person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

from densehmr.body.assets import Charts
from densehmr.metrics.densepose_ap import GT_MASK, PROTOCOLS
from densehmr.metrics.densepose_masks import dp_mask_union
from densehmr.metrics.densepose_results import ResultsError, require
from densehmr.render import screen_to_iuv

HMR_FIELDS = ("image_id", "id", "smpl_z", "smpl_xy_proj")


def is_hmr_record(record) -> bool:
    """Whether a results entry is in MeshPose's general HMR layout."""
    return isinstance(record, Mapping) and "smpl_xy_proj" in record


def box_window(bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) integer pixel window of an [x, y, w, h] box, as DensePose's evaluator reads it."""
    x, y, w, h = (float(v) for v in bbox)
    return int(x), int(y), int(w), int(h)


def dp_mask_in_box(dp_masks: Sequence, bbox: Sequence[float]) -> np.ndarray:
    """GT person mask (int(h), int(w)) bool: the union of the 14 dp_masks resized by nearest neighbour."""
    _, _, w, h = box_window(bbox)
    union = dp_mask_union(dp_masks).astype(np.uint8)
    return cv2.resize(union, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_NEAREST)[:h, :w] > 0


def render_in_box(
    xy: np.ndarray, z: np.ndarray, charts: Charts, bbox: Sequence[float], image_hw: tuple[int, int]
) -> np.ndarray:
    """(3, int(h), int(w)) uint8 [I, U·255, V·255] of the mesh (xy (V, 2) image px, z (V,) depth) over
    the box window, zero outside the image; U, V quantized as DensePose's evaluator quantizes them."""
    x0, y0, w, h = box_window(bbox)
    screen = torch.from_numpy(np.concatenate([xy - [x0, y0], z[:, None]], 1)).float()[None]
    iuv = screen_to_iuv(screen, charts, (h, w))[0]
    out = torch.cat([iuv[:1], (iuv[1:] * 255).clamp(0, 255)]).to(torch.uint8).numpy()
    rows, cols = np.arange(h)[:, None] + y0, np.arange(w)[None] + x0
    inside = (rows >= 0) & (rows < image_hw[0]) & (cols >= 0) & (cols < image_hw[1])
    return out * inside


def hmr_detection(
    record: Mapping, ann: Mapping, image: Mapping, charts: Charts, num_vertices: int, protocol: str, where: str
) -> tuple[dict, np.ndarray] | None:
    """The detection and its IUV (3, int(h), int(w)) uint8 for one record whose GT annotation is `ann`
    on `image`, a mesh of `num_vertices` with `charts`; None when the protocol skips it (gt_mask
    without dp_masks)."""
    require(record, HMR_FIELDS, where)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == GT_MASK and "dp_masks" not in ann:
        return None
    num = num_vertices
    try:
        xy = np.asarray(record["smpl_xy_proj"], dtype=np.float64)
        z = np.asarray(record["smpl_z"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: fields 'smpl_xy_proj' / 'smpl_z' must be numbers") from None
    if xy.shape != (num, 2):
        raise ResultsError(f"{where}: field 'smpl_xy_proj' is {list(xy.shape)}, the body needs [{num}, 2]")
    if z.shape != (num,):
        raise ResultsError(f"{where}: field 'smpl_z' is {list(z.shape)}, the body needs [{num}]")
    if not (np.isfinite(xy).all() and np.isfinite(z).all()):
        raise ResultsError(f"{where}: fields 'smpl_xy_proj' / 'smpl_z' hold non-finite values")
    iuv = render_in_box(xy, z, charts, ann["bbox"], (int(image["height"]), int(image["width"])))
    if protocol == GT_MASK:
        iuv = iuv * dp_mask_in_box(ann["dp_masks"], ann["bbox"])
    detection = {
        "image_id": record["image_id"],
        "category_id": ann["category_id"],
        "bbox": [float(v) for v in ann["bbox"]],
        "score": 1.0,
    }
    return detection, iuv
