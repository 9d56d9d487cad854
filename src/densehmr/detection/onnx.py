"""A person detector of your own, exported to ONNX and run with onnxruntime (on the CPU).

The graph's contract:
- input: its first input, float32 (1, 3, H, W), RGB, values in [0, 1]. When H and W are fixed numbers
  the photo is scaled (aspect kept) to fit inside them and padded right and bottom with PAD_VALUE;
  when they are dynamic the photo is given at its own size.
- outputs: `boxes` (N, 4) corners x1, y1, x2, y2 in the input's px and `scores` (N,); optionally
  `labels` (N,), of which only `person_label` rows are kept (default 1, COCO's person category, as
  torchvision's detectors number them). A leading batch axis of 1 is allowed. Outputs are found by
  these names, else taken in this order.
Raw multi-anchor heads (e.g. YOLO's (1, 84, 8400)) need their decoding and NMS inside the graph.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from densehmr.detection.boxes import COCO_PERSON, Detections, xyxy_to_xywh

PAD_VALUE = 0.5
DEFAULT_SCORE_THRESHOLD = 0.5
OUTPUT_NAMES = ("boxes", "scores", "labels")


class DetectorModelError(ValueError):
    """An ONNX detector that cannot be used; the message is one line naming the file."""


class OnnxDetector:
    """A user's ONNX person detector (see the module's doc for the contract)."""

    name = "onnx"
    default_score_threshold = DEFAULT_SCORE_THRESHOLD

    def __init__(self, path: str | Path, person_label: int = COCO_PERSON, threads: int | None = None) -> None:
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DetectorModelError(f"{self.path}: ONNX detectors need onnxruntime (make setup-dev)") from exc
        self.person_label = int(person_label)
        if not self.path.is_file():
            raise DetectorModelError(f"{self.path}: no such ONNX detector")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for any unreadable graph
            raise DetectorModelError(f"{self.path}: not a usable ONNX model ({str(exc).splitlines()[0]})") from exc
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        dims = list(first.shape)
        if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 3):
            raise DetectorModelError(f"{self.path}: input {first.name!r} must be (1, 3, H, W), is {dims}")
        fixed = all(isinstance(d, int) for d in dims[2:])
        self.input_hw = (int(dims[2]), int(dims[3])) if fixed else None
        outputs = [o.name for o in self.session.get_outputs()]
        if len(outputs) < 2:
            raise DetectorModelError(f"{self.path}: needs outputs boxes and scores, has {outputs}")
        named = all(n in outputs for n in OUTPUT_NAMES[:2])
        self.output_names = (
            [n for n in OUTPUT_NAMES if n in outputs] if named else outputs[: len(OUTPUT_NAMES)]
        )

    def describe(self) -> str:
        return f"ONNX detector {self.path}"

    def _input(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The (1, 3, H, W) float32 input and the scale from photo px to input px."""
        rgb = image.astype(np.float32) / 255.0
        if self.input_hw is None:
            return rgb.transpose(2, 0, 1)[None], 1.0
        h, w = image.shape[:2]
        th, tw = self.input_hw
        scale = min(th / h, tw / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        canvas = np.full((th, tw, 3), PAD_VALUE, dtype=np.float32)
        canvas[: size[1], : size[0]] = cv2.resize(rgb, size, interpolation=interpolation)
        return canvas.transpose(2, 0, 1)[None], scale

    def __call__(self, image: np.ndarray, path: Path | None = None) -> Detections:
        """People in image (H, W, 3) uint8 RGB, boxes in its px."""
        tensor, scale = self._input(image)
        values = self.session.run(self.output_names, {self.input_name: tensor})
        boxes, scores = (np.asarray(v, dtype=np.float64) for v in values[:2])
        boxes = boxes.reshape(-1, 4) if boxes.size else np.zeros((0, 4))
        scores = scores.reshape(-1)
        if len(boxes) != len(scores):
            raise DetectorModelError(f"{self.path}: {len(boxes)} boxes but {len(scores)} scores")
        if len(values) > 2:
            labels = np.asarray(values[2]).reshape(-1)
            keep = labels == self.person_label
            boxes, scores = boxes[keep], scores[keep]
        return Detections(xyxy_to_xywh(boxes) / scale, scores)
