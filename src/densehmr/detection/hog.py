"""The built-in people detector: OpenCV's HOG descriptor with its linear SVM trained on pedestrians
(Dalal and Triggs, CVPR 2005), shipped inside OpenCV, so it works offline with nothing to download.

It finds upright, mostly full-body people at least about a quarter of the photo's larger side tall
(its window is 64 x 128 px and the photo is scanned at WORK_SIDE px); seated, close-up or lying people
are often missed. Its scores are SVM margins, not probabilities.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from densehmr.detection.boxes import Detections

WORK_SIDE = 480  # px, the photo's larger side while scanning (smaller photos are enlarged)
WIN_STRIDE = (4, 4)  # px between windows
PADDING = (16, 16)  # px added around the photo, so people at its border are scanned
SCALE_STEP = 1.05  # pyramid scale between levels
HIT_THRESHOLD = 0.0  # SVM margin a window needs to count (the selection's threshold comes after grouping)
DEFAULT_SCORE_THRESHOLD = 0.3
# The 64 x 128 window holds a standing person about 48 x 112 px (limbs included) at its centre; the
# window is shrunk to that, the extent of the COCO-style boxes the methods' crops were trained on.
PERSON_IN_WINDOW = (48 / 64, 112 / 128)


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM people detector over an RGB photo."""

    name = "opencv-hog"
    default_score_threshold = DEFAULT_SCORE_THRESHOLD

    def __init__(self, work_side: int = WORK_SIDE) -> None:
        self.work_side = int(work_side)
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def describe(self) -> str:
        return "OpenCV HOG people detector (built in)"

    def __call__(self, image: np.ndarray, path: Path | None = None) -> Detections:
        """People in image (H, W, 3) uint8 RGB: boxes in its px, scores = SVM margins."""
        h, w = image.shape[:2]
        scale = self.work_side / max(h, w)
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        work = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interpolation)
        rects, margins = self.hog.detectMultiScale(
            work, hitThreshold=HIT_THRESHOLD, winStride=WIN_STRIDE, padding=PADDING, scale=SCALE_STEP
        )
        if len(rects) == 0:
            return Detections(np.zeros((0, 4)), np.zeros(0))
        windows = np.asarray(rects, dtype=np.float64) / scale
        size = windows[:, 2:] * np.array(PERSON_IN_WINDOW)
        centre = windows[:, :2] + windows[:, 2:] / 2
        return Detections(np.concatenate([centre - size / 2, size], axis=1), np.ravel(margins))
