"""Finding the people in a photograph, for the demo: boxes from a COCO detections file
(`from_file`), OpenCV's built-in people detector (`hog`), or a user's ONNX detector (`onnx`), each
followed by one selection (`boxes.select_people`: score threshold, minimum size, non-maximum suppression).
"""

from densehmr.detection.boxes import Detections, select_people
from densehmr.detection.choose import Detector, build_detector

__all__ = ["Detections", "Detector", "build_detector", "select_people"]
