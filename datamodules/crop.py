"""Person crops: the padded, aspect-kept box and the similarity (+ optional flip) that warps it to the crop.

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), its centre at (j + 0.5, i + 0.5);
a horizontal flip of a width-W crop maps x to W - x. Affines are (2, 3) matrices acting on (x, y, 1).
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_PADDING = 1.2


def padded_box(
    bbox: np.ndarray, out_hw: tuple[int, int], padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) and size (2,) w, h of the crop box: `bbox` (4,) xywh px grown to the crop's aspect
    (the short side extended, never squeezed), then scaled by `padding` about its centre."""
    x, y, w, h = (float(v) for v in bbox)
    out_h, out_w = out_hw
    aspect = out_w / out_h
    w, h = max(w, h * aspect), max(h, w / aspect)
    return np.array([x + bbox[2] / 2, y + bbox[3] / 2]), np.array([w, h]) * padding


def rotation_2d(angle_deg: float) -> np.ndarray:
    """(2, 2) rotation by `angle_deg` in image axes (x right, y down): [[c, -s], [s, c]]."""
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def crop_affine(
    center: np.ndarray,
    box_wh: np.ndarray,
    out_hw: tuple[int, int],
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """(2, 3) image -> crop affine: the box (centre, w) to the crop (centre, W), rotated by `rotation_deg`
    about the centre, then mirrored (x -> W - x) if `flip`."""
    out_h, out_w = out_hw
    s = out_w / float(box_wh[0])
    linear = s * rotation_2d(rotation_deg)
    affine = np.zeros((2, 3))
    affine[:, :2] = linear
    affine[:, 2] = np.array([out_w / 2, out_h / 2]) - linear @ np.asarray(center, dtype=np.float64)
    if flip:
        affine = to_3x3(np.array([[-1.0, 0.0, out_w], [0.0, 1.0, 0.0]]))[:2] @ to_3x3(affine)
    return affine


def to_3x3(affine: np.ndarray) -> np.ndarray:
    """(3, 3) homogeneous form of a (2, 3) affine."""
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """(2, 3) inverse of a (2, 3) affine."""
    (a, b), (c, d) = affine[:, :2]
    linear = np.array([[d, -b], [-c, a]]) / (a * d - b * c)
    return np.concatenate([linear, -(linear @ affine[:, 2])[:, None]], axis=1)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine of `outer` after `inner`."""
    return (to_3x3(outer) @ to_3x3(inner))[:2]


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points mapped by a (2, 3) affine."""
    return points @ affine[:, :2].T + affine[:, 2]


def affine_scale(affine: np.ndarray) -> float:
    """Area scale of an affine's linear part, as a length factor (sqrt |det|)."""
    return float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))


def warp(
    image: np.ndarray, affine: np.ndarray, out_hw: tuple[int, int], nearest: bool = False, fill: int = 0
) -> np.ndarray:
    """`image` (h, w[, C]) resampled by the source -> destination `affine` to (H, W[, C]).

    OpenCV puts pixel centres at integer coordinates; we put them at +0.5, hence the half-pixel shifts.
    """
    index_affine = affine.copy()
    index_affine[:, 2] += affine[:, :2].sum(1) * 0.5 - 0.5
    return cv2.warpAffine(
        image,
        index_affine,
        (out_hw[1], out_hw[0]),
        flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


def scale_affine(factor: float) -> np.ndarray:
    """(2, 3) affine x -> factor * x (e.g. from an image decoded at 1/factor resolution to the full one)."""
    return np.array([[factor, 0.0, 0.0], [0.0, factor, 0.0]])


def box_affine(bbox: np.ndarray, grid: int) -> np.ndarray:
    """(2, 3) affine from a `grid` x `grid` raster over `bbox` xywh (DensePose's 256 masks) to the image."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array([[w / grid, 0.0, x], [0.0, h / grid, y]])


def box_through(affine: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(4,) xywh axis-aligned box around `bbox` (4,) xywh mapped by `affine`."""
    x, y, w, h = (float(v) for v in bbox)
    corners = apply_affine(affine, np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]]))
    lo, hi = corners.min(0), corners.max(0)
    return np.concatenate([lo, hi - lo])
