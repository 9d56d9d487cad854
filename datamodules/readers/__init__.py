"""Dataset readers: annotation files in their real formats -> validated per-person records.

Every reader yields `RawSample`s (numpy, image pixels); the dataset turns them into crops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class DensePoints:
    """DensePose point annotations of one person, in image pixels.

    x, y: (P,) float64 image px.  part: (P,) int64 1..24.  u, v: (P,) float32 in [0, 1].
    offset: index of the first point in its reader's `dense_table()`, -1 when the reader has none.
    """

    x: np.ndarray
    y: np.ndarray
    part: np.ndarray
    u: np.ndarray
    v: np.ndarray
    offset: int = -1


@dataclass(frozen=True)
class BodyTarget:
    """SMPL-format parameters, 3D joints and camera of one person (SPIN/PyMAF npz row).

    pose: (72,) axis-angle, global orient first, camera frame, or None.  betas: (10,) or None.
    joints3d: (17, 4) H36M-17 metres + confidence, or None; in the camera frame if joints3d_in_camera,
    else relative to the pelvis as the file gives it.
    cam_K: (3, 3) image-px intrinsics, or None.  cam_t: (3,) metres, or None: the body's translation
    (camera frame = body + cam_t), or the joints' for rows without SMPL parameters.
    gender: of the GT body, 0 neutral / unknown, 1 male, 2 female (`spin_npz.GENDERS`).
    """

    pose: np.ndarray | None
    betas: np.ndarray | None
    joints3d: np.ndarray | None
    cam_K: np.ndarray | None
    cam_t: np.ndarray | None
    gender: int = 0
    joints3d_in_camera: bool = True


@dataclass(frozen=True)
class RawSample:
    """One person as annotated, before cropping. Coordinates are image pixels (continuous, x right).

    bbox: (4,) xywh person box.  keypoints: (17, 3) COCO-17 x, y, visibility (0/1/2) or None.
    dp_masks: 14 RLE dicts (None where empty) over the box at 256x256, or None.
    segmentation: COCO polygons (list of flat xy lists) or an image-size RLE dict, or None.
    image_size: (H, W) from the annotation file, or None when the file does not say.
    """

    source: str
    image_path: Path
    image_size: tuple[int, int] | None
    image_id: int
    ann_id: int
    bbox: np.ndarray
    area: float
    keypoints: np.ndarray | None
    dense: DensePoints | None
    dp_masks: list[dict[str, Any] | None] | None
    segmentation: Any
    body: BodyTarget | None


class SampleReader(Protocol):
    """What the dataset reads from: a validated list of people. A reader holding DensePose points may
    also offer `dense_table() -> (part (T,) int64, u (T,), v (T,))`, all its points in `offset` order."""

    @property
    def source(self) -> str: ...

    def __len__(self) -> int: ...

    def raw(self, index: int) -> RawSample: ...


# Bounds on what a person's annotation can hold, for values that are finite yet no person's (a 1e39 in a
# file is finite in float64 and inf in the float32 samples): image coordinates within this many pixels of
# the origin (no image is that wide), a body's confident 3D joints within this distance of their centre (a
# standing adult spans < 2.5 m), camera-frame positions within this distance, axis-angle rotations within
# two turns, SMPL shape coefficients (unit-variance PCA) within this magnitude.
VALUE_BOUNDS = {"pixels": 1e5, "body_metres": 3.0, "camera_metres": 1e3, "rotation_rad": 4 * np.pi, "betas": 20.0}


class PackedJSON:
    """JSON-able objects packed in one byte buffer, so DataLoader workers do not copy them on read
    (a list of Python objects is touched by reference counting and copied page by page)."""

    def __init__(self, items: list[Any]) -> None:
        blobs = [json.dumps(item, separators=(",", ":")).encode() for item in items]
        self._offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Any:
        start, end = self._offsets[index], self._offsets[index + 1]
        return json.loads(self._buffer[start:end].tobytes())


from datamodules.readers.densepose_coco import DensePoseCocoReader  # noqa: E402
from datamodules.readers.spin_npz import SpinNpz, SpinNpzReader  # noqa: E402

__all__ = [
    "BodyTarget",
    "DensePoints",
    "DensePoseCocoReader",
    "PackedJSON",
    "RawSample",
    "SampleReader",
    "SpinNpz",
    "SpinNpzReader",
]
