"""DensePose-COCO annotations of one rendered person, from the image's label maps.

Pixel conventions are the renderer's: pixel (i, j) covers [j, j+1) x [i, i+1), centre (j + 0.5, i + 0.5).
Boxes are pixel-extent boxes (x, y, w, h) of the visible mask; DensePose's box frame maps box
coordinate d in 0..256 to image x = box_x + d / 256 * box_w (and likewise for y), which is what the
readers invert.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from densehmr.body.assets import FINE_TO_MASK14

DP_GRID = 256
NUM_MASKS = 14
# Dense points: a person gets none if its box's longer side is under MIN_DP_BOX px or if less than
# MIN_DP_VISIBLE of its in-image silhouette is visible; otherwise about POINTS_RANGE points.
MIN_DP_BOX = 32
MIN_DP_VISIBLE = 0.3
POINTS_RANGE = (100, 150)
# Fixed-point steps tuning the grid spacing to the target count; the count falls roughly like
# spacing^-1.5 (between area-bound 2 and border-bound 1), hence the gain.
_SPACING_STEPS = 3
_SPACING_GAIN = 0.7
# Keypoints closer to the camera plane than this (m) are not projected (treated as outside).
NEAR_PLANE = 0.05
# How far (m) the visible surface may lie in front of a keypoint before the keypoint counts as occluded:
# the joint's depth inside its own body part (face landmarks lie on the surface).
KEYPOINT_DEPTH_SLACK = np.array(
    [0.06, 0.05, 0.05, 0.06, 0.06, 0.15, 0.15, 0.10, 0.10, 0.08, 0.08, 0.16, 0.16, 0.10, 0.10, 0.08, 0.08]
)
_FINE_TO_MASK14 = np.asarray(FINE_TO_MASK14, dtype=np.uint8)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a (H, W) bool mask, JSON-ready (counts as str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-extent box (x, y, w, h) of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def keypoint_labels(
    joints: np.ndarray,
    focal: float,
    size: int,
    zbuf: np.ndarray,
    owner: np.ndarray,
    occluder: np.ndarray,
) -> np.ndarray:
    """COCO keypoints (17, 3): x, y image px and v = 2 visible, 1 occluded, 0 outside (x = y = 0).

    joints: (17, 3) camera-frame metres. zbuf, owner: (H, W) depth and person index of the visible
    surface (inf / -1 on background); occluder: (H, W) bool. A keypoint is occluded when an occluder
    covers its pixel, or when the visible surface there is more than its depth slack in front of it,
    whoever it belongs to (another person, or the person's own far side).
    """
    z = joints[:, 2]
    safe_z = np.where(z > NEAR_PLANE, z, 1.0)
    xy = focal * joints[:, :2] / safe_z[:, None] + size / 2.0
    inside = (z > NEAR_PLANE) & (xy >= 0).all(1) & (xy < size).all(1)
    col = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, size - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, size - 1)
    hidden = occluder[row, col] | ((owner[row, col] >= 0) & (zbuf[row, col] < z - KEYPOINT_DEPTH_SLACK))
    v = np.where(inside, np.where(hidden, 1, 2), 0)
    out = np.zeros((17, 3))
    out[inside, :2] = xy[inside]
    out[:, 2] = v
    return out


def _grid_cells(
    rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, spacing: float, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cell key (n,) of each pixel in a grid of `spacing` px shifted by `offset` (2,) cells, one cell
    set per label, and the pixel's squared distance (n,) to its cell centre, in cells."""
    y = (rows + 0.5) / spacing - offset[0]
    x = (cols + 0.5) / spacing - offset[1]
    cell_y, cell_x = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    span_y, span_x = np.ptp(cell_y) + 1, np.ptp(cell_x) + 1
    key = (labels * span_y + cell_y - cell_y.min()) * span_x + cell_x - cell_x.min()
    return key, (y - cell_y - 0.5) ** 2 + (x - cell_x - 0.5) ** 2


def sample_dense_points(
    rng: np.random.Generator, visible: np.ndarray, part: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (n,) of roughly equidistant points on a person's visible pixels, within each part.

    visible: (H, W) bool; part: (H, W) 0..24. A square grid, randomly offset, is laid over the person;
    in every (part, cell) the pixel nearest the cell centre becomes a point, so each visible part gets
    points spread over it, even a small one. The spacing is tuned to a count drawn from POINTS_RANGE
    (cells cut by part borders add points, so the area alone overestimates it). At most
    POINTS_RANGE[1] points are kept.
    """
    rows, cols = np.nonzero(visible)
    if rows.size == 0:
        return rows, cols
    labels = part[rows, cols].astype(np.int64)
    target = int(rng.integers(POINTS_RANGE[0], POINTS_RANGE[1] + 1))
    offset = rng.uniform(0.0, 1.0, 2)
    spacing = float(np.sqrt(rows.size / target))
    for _ in range(_SPACING_STEPS):
        count = np.unique(_grid_cells(rows, cols, labels, max(spacing, 1.0), offset)[0]).size
        spacing *= (count / target) ** _SPACING_GAIN
    key, dist = _grid_cells(rows, cols, labels, max(spacing, 1.0), offset)
    # Sorted by (cell, distance, random tie-break), the first pixel of each cell wins.
    order = np.lexsort((rng.random(rows.size), dist, key))
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    chosen = np.sort(order[first])
    if chosen.size > POINTS_RANGE[1]:
        chosen = np.sort(rng.choice(chosen, POINTS_RANGE[1], replace=False))
    return rows[chosen], cols[chosen]


def dense_fields(
    rows: np.ndarray,
    cols: np.ndarray,
    part: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    box: tuple[int, int, int, int],
) -> dict[str, list]:
    """dp_x, dp_y (0..256 of the box, at the pixel centres), dp_I, dp_U, dp_V of the chosen pixels."""
    x0, y0, w, h = box
    return {
        "dp_x": np.round((cols + 0.5 - x0) * DP_GRID / w, 3).tolist(),
        "dp_y": np.round((rows + 0.5 - y0) * DP_GRID / h, 3).tolist(),
        "dp_I": part[rows, cols].astype(np.int64).tolist(),
        "dp_U": np.round(u[rows, cols].astype(np.float64), 5).tolist(),
        "dp_V": np.round(v[rows, cols].astype(np.float64), 5).tolist(),
    }


def box_grid(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image rows (256,) and columns (256,) that DensePose's 256 x 256 box grid samples (nearest pixel)."""
    x0, y0, w, h = box
    centres = (np.arange(DP_GRID) + 0.5) / DP_GRID
    return (np.floor(y0 + centres * h).astype(np.int64), np.floor(x0 + centres * w).astype(np.int64))


def dp_masks(part: np.ndarray, visible: np.ndarray, box: tuple[int, int, int, int]) -> list:
    """DensePose's 14 coarse part masks: each a 256 x 256 RLE of the person's visible part map zoomed to
    its box, or [] where the part is not visible."""
    rows, cols = box_grid(box)
    coarse = np.where(visible, _FINE_TO_MASK14[part], 0)[rows][:, cols]
    stack = coarse[..., None] == np.arange(1, NUM_MASKS + 1, dtype=np.uint8)
    rles = mask_utils.encode(np.asfortranarray(stack.astype(np.uint8)))
    present = stack.any((0, 1))
    return [
        {"size": [DP_GRID, DP_GRID], "counts": r["counts"].decode("ascii")} if present[k] else []
        for k, r in enumerate(rles)
    ]
