"""Detected boxes and the selection every detector's output goes through: a score threshold, a
minimum size and greedy non-maximum suppression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COCO_PERSON = 1  # COCO's category id of people (torchvision's detectors number their labels the same way)
NMS_IOU = 0.5  # two boxes overlapping more than this are one person (the higher score is kept)
MIN_SIZE_PX = 32  # boxes whose longer side is shorter than this are too small to fit a body in


@dataclass(frozen=True)
class Detections:
    """People found in one image. boxes: (N, 4) x, y, w, h image px; scores: (N,), higher is surer (on
    the detector's own scale)."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64).reshape(-1))
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index])


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) corners x1, y1, x2, y2 -> x, y, w, h."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of xywh boxes a (N, 4) and b (M, 4); 0 where both are empty."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first: a box is
    dropped when its IoU with a kept higher-scoring box exceeds `iou_threshold` (ties: the earlier box)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    iou = iou_matrix(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def select_people(
    found: Detections, score_threshold: float, iou_threshold: float = NMS_IOU, min_size: float = MIN_SIZE_PX
) -> Detections:
    """The people to fit, highest score first: scores >= score_threshold, longer side >= min_size px,
    then non-maximum suppression."""
    sides = found.boxes[:, 2:]
    keep = (found.scores >= score_threshold) & (sides > 0).all(axis=1)
    keep &= sides.max(axis=1, initial=0.0) >= min_size
    found = found.take(np.flatnonzero(keep))
    return found.take(nms(found.boxes, found.scores, iou_threshold))
