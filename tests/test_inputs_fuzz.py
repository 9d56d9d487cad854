"""Fuzzed inputs end in our clear errors, never in a crash: images of any size, mode, format, EXIF
orientation or truncation through the demo's loader and crop; DensePose-COCO files with missing,
extra or wrongly typed top-level and image fields, and SPIN npz files with missing, extra, wrongly
typed or wrongly shaped arrays, through the readers and the dataset (tests/test_readers.py fuzzes the
fields of single annotations and random bytes as annotated images)."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_readers import IMAGES, _annotations, _json_values, _smpl_npz, _write

from datamodules.dataset import DenseHMRDataset, Skipped
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader, SpinNpz, SpinNpzReader
from densehmr.inference import ImageError, crop_person, read_image

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- images
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp"}


def _picture(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    if mode in ("I;16", "I"):
        return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)).convert(mode)
    if mode == "F":
        return Image.fromarray(rng.normal(0.5, 2.0, (h, w)).astype(np.float32))
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    return rgba.convert(mode)


@st.composite
def image_files(draw):
    """(encoded bytes, expected (h, w) if it decodes whole, whether it was cut short)."""
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(sorted(FORMATS)))
    orientation = draw(st.integers(1, 8)) if fmt in ("JPEG", "PNG", "WEBP") else 1  # formats Pillow writes EXIF to
    picture = _picture(np.random.default_rng(draw(st.integers(0, 2**16))), mode, (w, h))
    buffer = io.BytesIO()
    options = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    try:
        picture.save(buffer, fmt, **options)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # this format cannot store this mode
    data = buffer.getvalue()
    cut = draw(st.none() | st.integers(0, len(data) - 1))
    expected = (w, h) if orientation >= 5 else (h, w)
    return (data if cut is None else data[:cut]), expected, cut is not None, FORMATS[fmt]


@FUZZ
@given(case=image_files(), box=st.tuples(st.floats(-60, 60), st.floats(-60, 60), st.floats(0.5, 90),
                                         st.floats(0.5, 90)))
def test_any_image_reads_as_rgb8_or_is_refused_in_one_line(tmp_path, case, box):
    data, expected_hw, cut, suffix = case
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except ImageError as err:
        message = str(err)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if not cut:
        assert image.shape[:2] == expected_hw
    crop = crop_person(image, np.array(box), (32, 24))
    assert crop.image.shape == (3, 32, 24) and bool(crop.image.isfinite().all())


@FUZZ
@given(data=st.binary(max_size=512), magic=st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n",
                                                            b"GIF89a", b"BM", b"II*\x00", b"RIFF"]))
def test_random_bytes_behind_image_magic_are_refused(tmp_path, data, magic):
    path = tmp_path / "noise.jpg"
    path.write_bytes(magic + data)
    try:
        image = read_image(path)
    except ImageError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
        return
    assert image.dtype == np.uint8 and image.ndim == 3  # a few byte strings are valid tiny images


# ----------------------------------------------------------------------------- DensePose-COCO files
@pytest.fixture(scope="module")
def fuzz_body(tmp_path_factory):
    from test_transforms import fake_body

    return fake_body(tmp_path_factory.mktemp("fuzz_body"))


def _read_everything(reader, body, mode: str) -> None:
    """Every sample of `reader` through the dataset: DataError (or Skipped in skip mode) is fine."""
    dataset = DenseHMRDataset(reader, body, (24, 24), on_bad_sample=mode)
    for i in range(len(reader)):
        try:
            sample = dataset[i]
        except DataError:
            continue
        assert isinstance(sample, Skipped) or sample["image"].shape == (3, 24, 24)


_IMAGE_FIELDS = ["id", "file_name", "width", "height"]
_TOP_FIELDS = ["images", "annotations", "categories"]


@st.composite
def densepose_files(draw):
    """A valid two-image DensePose-COCO file with a few top-level or image-entry fields deleted,
    replaced by any JSON value, or joined by unknown extra fields."""
    content = {"images": copy.deepcopy(IMAGES), "annotations": _annotations(np.random.default_rng(0)),
               "categories": [{"id": 1}]}
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "image", "annotation"]))
        action = draw(st.sampled_from(["delete", "replace", "extra"]))
        if where == "top":
            target, key = content, draw(st.sampled_from(_TOP_FIELDS))
        elif where == "image" and isinstance(content.get("images"), list) and content["images"]:
            target = content["images"][draw(st.integers(0, len(content["images"]) - 1))]
            key = draw(st.sampled_from(_IMAGE_FIELDS))
        elif isinstance(content.get("annotations"), list) and content["annotations"]:
            target = content["annotations"][draw(st.integers(0, len(content["annotations"]) - 1))]
            key = draw(st.sampled_from(["id", "image_id", "bbox", "dp_x"]))
        else:
            continue
        if not isinstance(target, dict):
            continue
        if action == "delete":
            target.pop(key, None)
        elif action == "replace":
            target[key] = draw(_json_values)
        else:
            target[draw(st.text(min_size=1, max_size=8))] = draw(_json_values)
    return content


@FUZZ
@given(content=densepose_files(), mode=st.sampled_from(["raise", "skip"]))
def test_densepose_files_with_bad_structure_raise_only_data_error(tmp_path, fuzz_body, content, mode):
    path = _write(tmp_path, [], name="layout.json")  # writes the two images the file names
    path.write_text(json.dumps(content))
    try:
        reader = DensePoseCocoReader(path, tmp_path / "images", BadSampleLog(mode))
    except DataError as err:
        assert "layout.json" in str(err)
        return
    _read_everything(reader, fuzz_body, mode)


def test_unknown_extra_fields_are_ignored(tmp_path, fuzz_body):
    anns = _annotations(np.random.default_rng(0))
    for ann in anns:
        ann["densepose_version"] = {"any": [1, "thing"]}
    images = [{**image, "license": 3, "coco_url": None} for image in IMAGES]
    path = _write(tmp_path, anns, images=images)
    content = json.loads(path.read_text())
    content["info"] = {"year": 2014}
    path.write_text(json.dumps(content))
    reader = DensePoseCocoReader(path, tmp_path / "images", BadSampleLog("raise"))
    plain = DensePoseCocoReader(_write(tmp_path / "plain", _annotations(np.random.default_rng(0))),
                                tmp_path / "plain" / "images", BadSampleLog("raise"))
    assert [reader.raw(i).ann_id for i in range(len(reader))] == [plain.raw(i).ann_id for i in range(len(plain))]


# ----------------------------------------------------------------------------- SPIN npz files
_NPZ_KEYS = ["imgname", "center", "scale", "pose", "shape", "S", "part", "has_smpl", "cam_K", "cam_t", "ann_id"]
_arrays = st.sampled_from(["strings", "bools", "complex", "empty", "scalar", "nan", "inf", "huge", "objects"])


def _bad_array(kind: str, rows: int, rng: np.random.Generator) -> np.ndarray:
    return {
        "strings": np.array(["x"] * rows),
        "bools": np.ones(rows, dtype=bool),
        "complex": np.ones((rows, 3), dtype=np.complex64),
        "empty": np.zeros((0,)),
        "scalar": np.array(3.0),
        "nan": np.full((rows, 3), np.nan),
        "inf": np.full((rows,), np.inf),
        "huge": np.full((rows, 72), 1e300),
        "objects": np.array([{"a": 1}] * rows, dtype=object),
    }[kind]


@st.composite
def npz_files(draw):
    """SPIN npz arrays (2 rows, linked to annotations 101 and 102) with arrays deleted, replaced by
    wrongly typed or shaped ones, rows corrupted, or unknown arrays added."""
    rng = np.random.default_rng(draw(st.integers(0, 3)))
    with np.load(_npz_buffer([101, 102], rng)) as data:
        arrays = {k: data[k] for k in data.files}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(_NPZ_KEYS))
        action = draw(st.sampled_from(["delete", "replace", "row", "extra"]))
        if action == "delete":
            arrays.pop(key, None)
        elif action == "replace":
            arrays[key] = _bad_array(draw(_arrays), 2, rng)
        elif action == "row" and key in arrays and arrays[key].ndim >= 1 and len(arrays[key]) == 2 \
                and arrays[key].dtype.kind == "f":
            arrays[key] = arrays[key].copy()
            arrays[key][draw(st.integers(0, 1))] = draw(st.sampled_from([np.nan, np.inf, -1e9, 0.0]))
        else:
            arrays[draw(st.text(alphabet="abcxyz_", min_size=1, max_size=6))] = _bad_array(draw(_arrays), 2, rng)
    return arrays


def _npz_buffer(ann_ids: list[int], rng: np.random.Generator) -> io.BytesIO:
    """The valid npz of test_readers' fixture, in memory."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = _smpl_npz(Path(folder) / "s.npz", ann_ids, rng)
        return io.BytesIO(path.read_bytes())


@FUZZ
@given(arrays=npz_files(), mode=st.sampled_from(["raise", "skip"]), joined=st.booleans())
def test_spin_npz_with_bad_arrays_raise_only_data_error(tmp_path, fuzz_body, arrays, mode, joined):
    npz = tmp_path / "smpl.npz"
    np.savez(npz, **arrays)
    log = BadSampleLog(mode)
    try:
        if joined:
            json_path = _write(tmp_path, _annotations(np.random.default_rng(0))[:2])
            reader = DensePoseCocoReader(json_path, tmp_path / "images", log, smpl=SpinNpz(npz, log))
        else:
            _write(tmp_path, [])  # the image a.jpg the rows name
            reader = SpinNpzReader(npz, tmp_path / "images", log)
    except DataError as err:
        assert "smpl.npz" in str(err)
        return
    _read_everything(reader, fuzz_body, mode)


def test_an_npz_holding_a_broken_array_is_a_data_error(tmp_path):
    bad = tmp_path / "smpl.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("imgname.npy", b"not an array")
    with pytest.raises(DataError, match="smpl.npz"):
        SpinNpz(bad, BadSampleLog("raise"))
