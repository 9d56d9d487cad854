"""Which detector the demo uses: a detections file when one is given, else `--detector`: the built-in
people detector (`hog`, the default), the whole photo as one person (`whole`), or an ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from densehmr.detection.boxes import Detections
from densehmr.detection.from_file import BoxesFile
from densehmr.detection.hog import HogPeopleDetector
from densehmr.detection.onnx import OnnxDetector

BUILT_IN = {"hog": HogPeopleDetector}
DEFAULT_DETECTOR = "hog"


class Detector(Protocol):
    name: str
    default_score_threshold: float

    def describe(self) -> str: ...

    def __call__(self, image: np.ndarray, path: Path) -> Detections: ...


class WholeImage:
    """The whole photo as one person's box (for portraits and ready-made crops)."""

    name = "whole"
    default_score_threshold = 0.0

    def describe(self) -> str:
        return "the whole image as one person"

    def __call__(self, image: np.ndarray, path: Path | None = None) -> Detections:
        h, w = image.shape[:2]
        return Detections(np.array([[0.0, 0.0, w, h]]), np.ones(1))


def build_detector(detector: str = DEFAULT_DETECTOR, boxes: str | Path | None = None,
                   root: str | Path | None = None) -> Detector:
    """The detector named by `detector` (hog | whole | a path to an .onnx file), or the boxes of the
    detections file `boxes` (image names relative to `root`) when given."""
    if boxes is not None:
        return BoxesFile(boxes, root)
    if detector == "whole":
        return WholeImage()
    if detector in BUILT_IN:
        return BUILT_IN[detector]()
    if detector.endswith(".onnx") or Path(detector).is_file():
        return OnnxDetector(detector)
    raise ValueError(f"--detector must be one of {sorted([*BUILT_IN, 'whole'])} or an .onnx file, got {detector!r}")
