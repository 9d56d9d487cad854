"""Finding people for the demo: box geometry, non-maximum suppression and the selection, COCO detections
files, the ONNX plug-in (with small models built here) and what the built-in detector does."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from two_people import two_people_photo

from densehmr.detection import Detections, build_detector, select_people
from densehmr.detection.boxes import iou_matrix, nms, xyxy_to_xywh
from densehmr.detection.from_file import BoxesFile, DetectionsFileError
from densehmr.detection.onnx import PAD_VALUE, DetectorModelError, OnnxDetector
from densehmr.inference import read_image


# ----------------------------------------------------------------------------- boxes, NMS, selection
def test_iou_of_hand_solved_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 5]])
    b = np.array([[5, 5, 10, 10], [20, 20, 4, 4], [0, 0, 10, 10]])
    expected = np.array([[25 / 175, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert np.allclose(iou_matrix(a, b), expected)
    assert np.allclose(xyxy_to_xywh(np.array([[1, 2, 4, 8]])), [[1, 2, 3, 6]])


def test_nms_keeps_the_best_of_each_overlapping_group_greedily():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [9, 0, 10, 10], [50, 50, 5, 5]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # 1 overlaps 0 (IoU 0.82): dropped. 2 overlaps 1 (0.05) and 0 (0.05): kept; 3 alone: kept.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.9).tolist() == [0, 1, 2, 3]


def test_nms_by_its_definition_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = np.concatenate([rng.uniform(0, 50, (30, 2)), rng.uniform(5, 30, (30, 2))], axis=1)
        scores = rng.permutation(30) / 30.0
        kept = nms(boxes, scores, 0.4)
        iou = iou_matrix(boxes, boxes)
        assert (np.diff(scores[kept]) < 0).all()
        assert all(iou[i, j] <= 0.4 for i in kept for j in kept if i != j)
        for d in set(range(30)) - set(kept.tolist()):  # every dropped box is covered by a better kept one
            assert any(iou[d, k] > 0.4 and scores[k] > scores[d] for k in kept)


def test_selection_applies_threshold_size_and_nms_and_sorts_by_score():
    found = Detections(
        np.array([[0, 0, 40, 80], [2, 0, 40, 80], [100, 0, 20, 31], [100, 100, 30, 60], [200, 0, 0, 90],
                  [300, 0, 40, 80]]),
        np.array([0.8, 0.9, 0.95, 0.6, 0.99, 0.2]),
    )
    chosen = select_people(found, score_threshold=0.5, iou_threshold=0.5, min_size=32)
    # box 2: longer side 31 < 32; box 4: zero width; box 5: score; box 0: overlaps the better box 1.
    assert chosen.boxes.tolist() == [[2, 0, 40, 80], [100, 100, 30, 60]]
    assert chosen.scores.tolist() == [0.9, 0.6]
    assert len(select_people(found, score_threshold=1.0)) == 0


# ----------------------------------------------------------------------------- detections files
def write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_coco_results_list_matches_names_paths_and_numeric_stems(tmp_path):
    (tmp_path / "sub").mkdir()
    f = write(tmp_path / "dets.json", [
        {"image_id": "a.jpg", "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9},
        {"image_id": "a.jpg", "category_id": 3, "bbox": [5, 5, 50, 50], "score": 0.99},  # a car
        {"image_id": "sub/b.png", "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.5},
        {"image_id": 397133, "bbox": [3, 4, 5, 6], "score": 0.7},  # no category: a person
    ])
    boxes = BoxesFile(f, root=tmp_path)
    image = np.zeros((8, 8, 3), np.uint8)
    a = boxes(image, tmp_path / "a.jpg")
    assert a.boxes.tolist() == [[1, 2, 30, 40]] and a.scores.tolist() == [0.9]
    assert boxes(image, tmp_path / "sub" / "b.png").boxes.tolist() == [[0, 0, 10, 20]]
    assert boxes(image, tmp_path / "000000397133.jpg").scores.tolist() == [0.7]
    assert len(boxes(image, tmp_path / "other.jpg")) == 0


def test_coco_dataset_dict_goes_through_its_images_and_person_category(tmp_path):
    f = write(tmp_path / "gt.json", {
        "images": [{"id": 7, "file_name": "val2014/x.jpg"}],
        "categories": [{"id": 5, "name": "person"}, {"id": 1, "name": "bicycle"}],
        "annotations": [{"image_id": 7, "category_id": 5, "bbox": [1, 1, 20, 40]},
                        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 9, 9]}],
    })
    found = BoxesFile(f)(np.zeros((8, 8, 3), np.uint8), tmp_path / "x.jpg")
    assert found.boxes.tolist() == [[1, 1, 20, 40]] and found.scores.tolist() == [1.0]


@pytest.mark.parametrize(
    ("payload", "where", "what"),
    [
        ([{"image_id": "a.jpg", "bbox": [1, 2, 3], "score": 1}], "detection[0]", "'bbox'"),
        ([{"image_id": "a.jpg", "bbox": [1, 2, 0, 4], "score": 1}], "detection[0]", "w, h > 0"),
        ([{"image_id": "a", "bbox": [1, 2, 3, 4], "score": 1}, {"image_id": "a", "bbox": [1, 2, 3, 4]}],
         "detection[1]", "'score'"),
        ([{"image_id": 1.5, "bbox": [1, 2, 3, 4], "score": 1}], "detection[0]", "'image_id'"),
        ({"images": []}, "top level", "'annotations'"),
        ({"images": [{"id": 1}], "annotations": []}, "images[0]", "'file_name'"),
        ("boxes", "top level", "list of detections"),
    ],
)
def test_bad_detections_are_refused_in_one_line_naming_file_record_and_field(tmp_path, payload, where, what):
    f = write(tmp_path / "dets.json", payload)
    with pytest.raises(DetectionsFileError) as info:
        BoxesFile(f)
    message = str(info.value)
    assert message.startswith(f"{f}: {where}: ") and what in message and "\n" not in message


def test_unreadable_detections_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    for path, reason in ((tmp_path / "bad.json", "not a JSON file"), (tmp_path / "none.json", "no such")):
        with pytest.raises(DetectionsFileError, match=reason):
            BoxesFile(path)


# ----------------------------------------------------------------------------- the ONNX plug-in
# Corners as fractions of the input's width and height, scores and COCO labels of three detections.
FRACTIONS = torch.tensor([[0.1, 0.2, 0.4, 0.9], [0.5, 0.1, 0.8, 0.95], [0.0, 0.0, 0.3, 0.3]])
SCORES = torch.tensor([0.9, 0.7, 0.95])
LABELS = torch.tensor([1, 1, 3])  # the third is not a person


class FixedDetector(nn.Module):
    """Returns FRACTIONS of its input's size as boxes (input px), SCORES and LABELS."""

    def forward(self, image: torch.Tensor):
        plane = torch.ones_like(image[0, 0])
        h, w = plane.sum(0)[0], plane.sum(1)[0]
        boxes = FRACTIONS * torch.stack([w, h, w, h])
        return boxes, SCORES + 0.0 * image.mean(), LABELS + (0.0 * image.mean()).long()


def export(module: nn.Module, path: Path, hw: tuple[int, int], dynamic: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(1, 3, *hw),), str(path), dynamo=False, opset_version=17,
            input_names=["image"], output_names=["boxes", "scores", "labels"],
            dynamic_axes={"image": {2: "height", 3: "width"}} if dynamic else None,
        )
    return path


def test_onnx_detector_with_dynamic_input_sees_the_photo_at_its_size(tmp_path):
    detector = OnnxDetector(export(FixedDetector(), tmp_path / "dyn.onnx", (64, 48), dynamic=True))
    assert detector.input_hw is None
    found = detector(np.zeros((300, 200, 3), np.uint8))
    corners = FRACTIONS[:2].numpy() * [200, 300, 200, 300]
    assert np.allclose(found.boxes, xyxy_to_xywh(corners), atol=1e-4)
    assert np.allclose(found.scores, SCORES[:2].numpy())


def test_onnx_detector_with_fixed_input_letterboxes_and_maps_boxes_back(tmp_path):
    class Probe(nn.Module):
        """Boxes of FixedDetector; scores: the input's mean over the picture part and over the padding."""

        def forward(self, image):
            boxes, _, labels = FixedDetector()(image)
            return boxes, torch.stack([image[0, :, :48, :].mean(), image[0, :, 48:, :].mean(), image.mean()]), labels

    detector = OnnxDetector(export(Probe(), tmp_path / "fixed.onnx", (128, 128), dynamic=False))
    assert detector.input_hw == (128, 128)
    photo = np.full((150, 400, 3), 255, np.uint8)  # scaled by 128 / 400 = 0.32 to 128 x 48
    found = detector(photo)
    corners = FRACTIONS[:2].numpy() * 128 / 0.32
    assert np.allclose(found.boxes, xyxy_to_xywh(corners), atol=1e-3)
    assert np.allclose(found.scores, [1.0, PAD_VALUE], atol=1e-6)  # the picture on top, padding below


def test_onnx_detector_refuses_unusable_files_in_one_line(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for path, reason in ((tmp_path / "junk.onnx", "not a usable ONNX model"), (tmp_path / "no.onnx", "no such")):
        with pytest.raises(DetectorModelError) as info:
            OnnxDetector(path)
        assert str(info.value).startswith(str(path)) and reason in str(info.value)
    with pytest.raises(ValueError, match="--detector"):
        build_detector("yolo")


# ----------------------------------------------------------------------------- the built-in detector
def test_builtin_detector_finds_both_people_of_the_two_person_photo(tmp_path, body):
    truth = two_people_photo(body, tmp_path / "two.jpg")
    detector = build_detector("hog")
    found = select_people(detector(read_image(tmp_path / "two.jpg")), detector.default_score_threshold)
    assert len(found) == 2
    assert (iou_matrix(truth, found.boxes).max(axis=1) > 0.6).all()


def test_builtin_detector_finds_nobody_on_a_plain_wall():
    detector = build_detector("hog")
    assert len(detector(np.full((240, 320, 3), 128, np.uint8))) == 0
