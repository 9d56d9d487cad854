"""Readers on small fixtures in the exact real formats, their errors on bad input, and a fuzz test."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.dataset import DenseHMRDataset, Skipped
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader, SpinNpz, SpinNpzReader
from datamodules.readers.densepose_coco import rle_counts, rle_to_mask

IMAGES = [
    {"id": 11, "file_name": "a.jpg", "width": 64, "height": 48},
    {"id": 12, "file_name": "b.jpg", "width": 80, "height": 60},
]


def _rle(mask: np.ndarray) -> dict:
    """A compressed RLE as it sits in the JSON (counts a str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _dp_masks(rng: np.random.Generator) -> list:
    masks = []
    for i in range(14):
        if i % 3 == 2:
            masks.append([])
            continue
        m = np.zeros((256, 256), dtype=np.uint8)
        x0, y0 = rng.integers(0, 200, size=2)
        m[y0 : y0 + 40, x0 : x0 + 30] = 1
        masks.append(_rle(m))
    return masks


def _annotations(rng: np.random.Generator) -> list[dict]:
    n = 30
    keypoints = np.zeros((17, 3))
    keypoints[:, 0] = rng.uniform(12, 40, 17)
    keypoints[:, 1] = rng.uniform(6, 40, 17)
    keypoints[:, 2] = rng.integers(0, 3, 17)
    return [
        {  # a DensePose person, real-file style: floats for dp_I
            "id": 101,
            "image_id": 11,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [10.0, 5.0, 30.5, 40.0],
            "area": 900.0,
            "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            "keypoints": keypoints.reshape(-1).tolist(),
            "segmentation": [[10, 5, 40, 5, 40, 45, 10, 45]],
            "dp_x": rng.uniform(0, 256, n).tolist(),
            "dp_y": rng.uniform(0, 256, n).tolist(),
            "dp_I": rng.integers(1, 25, n).astype(float).tolist(),
            "dp_U": rng.uniform(0, 1, n).tolist(),
            "dp_V": rng.uniform(0, 1, n).tolist(),
            "dp_masks": _dp_masks(rng),
        },
        {  # a person without DensePose points, RLE segmentation
            "id": 102,
            "image_id": 12,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [0.0, 0.0, 80.0, 60.0],
            "area": 50.0,
            "keypoints": [0] * 51,
            "segmentation": _rle(np.pad(np.ones((10, 5)), ((3, 47), (4, 71)))),
        },
        {"id": 103, "image_id": 12, "category_id": 1, "iscrowd": 1, "bbox": [1, 1, 5, 5]},  # crowd: left out
        {"id": 104, "image_id": 12, "category_id": 3, "bbox": [1, 1, 5, 5]},  # not a person: left out
    ]


def _write(root: Path, annotations: list[dict], images: list[dict] = IMAGES, name="densepose_train.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for image in images:
        pixels = rng.integers(0, 256, size=(image["height"], image["width"], 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / image["file_name"]), pixels)
    return path


def _smpl_npz(path: Path, ann_ids: list[int], rng: np.random.Generator, **overrides) -> Path:
    n = len(ann_ids)
    arrays = {
        "imgname": np.array(["a.jpg"] * n),
        "center": rng.uniform(20, 40, size=(n, 2)),
        "scale": np.full(n, 0.3),
        "pose": rng.normal(scale=0.2, size=(n, 72)),
        "shape": rng.normal(size=(n, 10)),
        "S": np.concatenate([0.3 * rng.normal(size=(n, 17, 3)), np.ones((n, 17, 1))], -1),
        "part": np.concatenate([rng.uniform(0, 48, size=(n, 17, 2)), np.full((n, 17, 1), 2.0)], -1),
        "has_smpl": np.ones(n),
        "cam_K": np.tile(np.array([[500.0, 0, 32], [0, 500.0, 24], [0, 0, 1]]), (n, 1, 1)),
        "cam_t": np.tile(np.array([0.0, 0.0, 5.0]), (n, 1)),
        "ann_id": np.asarray(ann_ids, dtype=np.int64),
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_densepose_coco_reader_reads_the_real_format(tmp_path):
    rng = np.random.default_rng(0)
    anns = _annotations(rng)
    path = _write(tmp_path, anns)
    reader = DensePoseCocoReader(path, tmp_path / "images", BadSampleLog("raise"))
    assert len(reader) == 2
    first, second = reader.raw(0), reader.raw(1)
    a = anns[0]
    assert first.ann_id == 101 and first.image_id == 11 and first.image_size == (48, 64)
    assert first.image_path == tmp_path / "images" / "a.jpg"
    assert np.allclose(first.dense.x, 10.0 + np.asarray(a["dp_x"]) / 256 * 30.5)
    assert np.allclose(first.dense.y, 5.0 + np.asarray(a["dp_y"]) / 256 * 40.0)
    assert first.dense.part.dtype == np.int64 and np.array_equal(first.dense.part, np.asarray(a["dp_I"]))
    assert np.allclose(first.dense.u, a["dp_U"]) and np.allclose(first.dense.v, a["dp_V"])
    assert np.allclose(first.keypoints, np.asarray(a["keypoints"]).reshape(17, 3))
    assert first.area == 900.0 and first.segmentation == a["segmentation"]
    for rle, got in zip(a["dp_masks"], first.dp_masks, strict=True):
        if rle:
            assert np.array_equal(rle_to_mask(got), mask_utils.decode(rle))
        else:
            assert got is None
    assert second.dense is None and second.dp_masks is None and second.keypoints is None  # all v = 0
    assert np.array_equal(rle_to_mask(second.segmentation), mask_utils.decode(anns[1]["segmentation"]))


@pytest.mark.parametrize("seed", range(5))
def test_rle_decoding_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 300, size=2)
    mask = (rng.random((h, w)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
    mask[: h // 2] = 0  # long runs need multi-character values
    rle = _rle(mask)
    assert np.array_equal(rle_to_mask(rle), mask_utils.decode(rle))
    uncompressed = {"size": [int(h), int(w)], "counts": rle_counts(rle).tolist()}
    assert np.array_equal(rle_to_mask(uncompressed), mask)


def test_spin_npz_reader_and_join(tmp_path):
    rng = np.random.default_rng(1)
    npz = _smpl_npz(tmp_path / "smpl_train.npz", [101, 555], rng)
    data = np.load(npz)
    reader = SpinNpzReader(npz, tmp_path / "images", BadSampleLog("raise"), box_padding=1.2)
    raw = reader.raw(0)
    size = 0.3 * 200 / 1.2
    assert np.allclose(raw.bbox, [*(data["center"][0] - size / 2), size, size])
    assert raw.ann_id == 101 and raw.image_path == tmp_path / "images" / "a.jpg"
    assert np.allclose(raw.keypoints, data["part"][0]) and np.allclose(raw.body.pose, data["pose"][0])
    assert np.allclose(raw.body.joints3d, data["S"][0]) and np.allclose(raw.body.cam_K, data["cam_K"][0])

    path = _write(tmp_path, _annotations(rng))
    log = BadSampleLog("raise")
    joined = DensePoseCocoReader(path, tmp_path / "images", log, smpl=SpinNpz(npz, log))
    assert np.allclose(joined.raw(0).body.betas, data["shape"][0]) and np.allclose(joined.raw(0).body.cam_t, [0, 0, 5])
    assert joined.raw(1).body is None  # annotation 102 has no npz row


def _mutate(ann: dict, key: str, value) -> dict:
    out = copy.deepcopy(ann)
    if value is _DELETE:
        del out[key]
    else:
        out[key] = value(out) if callable(value) else value
    return out


_DELETE = object()
BAD_ANNOTATIONS = [
    ("dp_x", lambda a: a["dp_x"][:-1], "unequal lengths"),
    ("dp_I", lambda a: [0.0] + a["dp_I"][1:], "outside 1..24"),
    ("dp_I", lambda a: [25.0] + a["dp_I"][1:], "outside 1..24"),
    ("dp_I", lambda a: [2.5] + a["dp_I"][1:], "not an integer"),
    ("dp_U", lambda a: [1.5] + a["dp_U"][1:], "outside [0, 1]"),
    ("dp_V", lambda a: [-0.1] + a["dp_V"][1:], "outside [0, 1]"),
    ("dp_U", lambda a: [float("nan")] + a["dp_U"][1:], "not finite"),
    ("dp_y", lambda a: [300.0] + a["dp_y"][1:], "outside 0..256"),
    ("dp_x", lambda a: ["1.0"] + a["dp_x"][1:], "not a list of numbers"),
    ("dp_V", _DELETE, "missing field"),
    ("bbox", [50.0, 5.0, 30.0, 40.0], "outside the image"),
    ("bbox", "10 5 30 40", "not 4 numbers"),
    ("bbox", _DELETE, "missing field"),
    ("bbox", [10.0, 5.0, 0.0, 40.0], "empty box"),
    ("id", "101", "wrong type"),
    ("image_id", 99, "unknown image"),
    ("keypoints", lambda a: a["keypoints"][:50], "not 51 numbers"),
    ("keypoints", lambda a: a["keypoints"][:2] + [3] + a["keypoints"][3:], "visibility not 0, 1 or 2"),
    ("dp_masks", lambda a: a["dp_masks"][:13], "not a list of 14"),
    ("dp_masks", lambda a: [{"size": [128, 256], "counts": "0"}] + a["dp_masks"][1:], "RLE size"),
    ("segmentation", [[1, 2, 3]], "not polygons"),
    ("segmentation", [[1e9, 0, 1, 0, 1, 1]], "outside the image"),
    ("area", float("inf"), "not a finite non-negative number"),
]


@pytest.mark.parametrize(("field", "change", "reason"), BAD_ANNOTATIONS)
def test_bad_annotation_errors_name_file_id_and_field(tmp_path, field, change, reason):
    anns = _annotations(np.random.default_rng(2))
    anns[0] = _mutate(anns[0], field, change)
    path = _write(tmp_path, anns)
    with pytest.raises(DataError) as info:
        DensePoseCocoReader(path, tmp_path / "images", BadSampleLog("raise"))
    message = str(info.value)
    ann_id = anns[0].get("id")
    assert str(path) in message and f"annotation {ann_id}" in message and f"'{field}'" in message
    assert reason in message and info.value.field == field


def test_skip_mode_counts_reasons_and_keeps_the_rest(tmp_path):
    rng = np.random.default_rng(3)
    good = _annotations(rng)[:2]
    bad = [
        _mutate(good[0], "dp_I", lambda a: [30.0] + a["dp_I"][1:]),
        _mutate(good[0], "dp_U", lambda a: [2.0] + a["dp_U"][1:]),
        _mutate(good[0], "dp_I", lambda a: [0.0] + a["dp_I"][1:]),
        _mutate(good[1], "bbox", [70.0, 0.0, 20.0, 20.0]),
    ]
    for i, ann in enumerate(bad):
        ann["id"] = 200 + i
    path = _write(tmp_path, good + bad)
    log = BadSampleLog("skip")
    reader = DensePoseCocoReader(path, tmp_path / "images", log)
    assert [reader.raw(i).ann_id for i in range(len(reader))] == [101, 102]
    assert log.counts == {"dp_I: outside 1..24": 2, "dp_U: outside [0, 1]": 1, "bbox: outside the image": 1}
    assert np.allclose(reader.raw(0).dense.u, good[0]["dp_U"])


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="missing file"):
        DensePoseCocoReader(tmp_path / "nope.json", tmp_path, BadSampleLog("skip"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match="broken.json.*unreadable JSON"):
        DensePoseCocoReader(broken, tmp_path, BadSampleLog("skip"))
    rng = np.random.default_rng(4)
    with pytest.raises(DataError, match="'pose': wrong shape"):
        SpinNpz(_smpl_npz(tmp_path / "s.npz", [1], rng, pose=np.zeros((1, 69))), BadSampleLog("skip"))
    with pytest.raises(DataError, match=r"s2.npz, annotation 7, field 'cam_t'"):
        SpinNpz(_smpl_npz(tmp_path / "s2.npz", [7], rng, cam_t=np.array([[0, 0, -1.0]])), BadSampleLog("raise"))
    log = BadSampleLog("skip")
    table = SpinNpz(_smpl_npz(tmp_path / "s3.npz", [7, 8], rng, scale=np.array([0.3, np.nan])), log)
    assert table.valid.tolist() == [True, False] and log.counts == {"scale: not positive": 1}


# --- fuzzing: nothing but DataError escapes -------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
_fields = ["id", "image_id", "category_id", "iscrowd", "bbox", "area", "keypoints", "segmentation"]
_fields += ["dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "dp_masks"]


@st.composite
def _malformed(draw):
    ann = _annotations(np.random.default_rng(draw(st.integers(0, 3))))[0]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(_fields))
        action = draw(st.sampled_from(["delete", "replace", "element", "nan"]))
        if action == "delete":
            ann.pop(key, None)
        elif action == "replace":
            ann[key] = draw(_json_values)
        elif isinstance(ann.get(key), list) and ann[key]:
            i = draw(st.integers(0, len(ann[key]) - 1))
            ann[key][i] = float("nan") if action == "nan" else draw(_json_values)
    return ann


@pytest.fixture(scope="module")
def fuzz_body(tmp_path_factory):
    from test_transforms import fake_body

    return fake_body(tmp_path_factory.mktemp("fuzz_body"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ann=_malformed(), mode=st.sampled_from(["raise", "skip"]))
def test_fuzz_malformed_annotations_raise_only_data_error(tmp_path, fuzz_body, ann, mode):
    path = _write(tmp_path, [ann], name="fuzz.json")
    try:
        reader = DensePoseCocoReader(path, tmp_path / "images", BadSampleLog(mode))
    except DataError:
        return
    dataset = DenseHMRDataset(reader, fuzz_body, (32, 32), on_bad_sample=mode)
    for i in range(len(reader)):
        try:
            sample = dataset[i]
        except DataError:
            continue
        assert isinstance(sample, Skipped) or sample["image"].shape == (3, 32, 32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048) | st.sampled_from([b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM"]))
def test_fuzz_random_bytes_as_images(tmp_path, fuzz_body, data):
    path = _write(tmp_path, _annotations(np.random.default_rng(5))[:1], name="bytes.json")
    (tmp_path / "images" / "a.jpg").write_bytes(data)
    dataset = DenseHMRDataset(
        DensePoseCocoReader(path, tmp_path / "images", BadSampleLog("raise")), fuzz_body, (32, 32)
    )
    with pytest.raises(DataError) as info:
        dataset[0]
    assert "a.jpg" in str(info.value) and "annotation 101" in str(info.value) and "'file_name'" in str(info.value)
