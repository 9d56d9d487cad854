"""Bad data ends in one line naming the file, the record and the field: from DataLoader workers as without
them, for splits that are empty or smaller than one batch, for files with no rows, and for values that are
finite yet no person's (a 1e39 coordinate, a 50 m body)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules.benchmark import write_fixture_dataset
from datamodules.datamodule import DenseHMRDataModule
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader, SpinNpzReader

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fixture_data(tmp_path) -> Path:
    return write_fixture_dataset(tmp_path / "data", "val", num_images=3, people_per_image=2, image_hw=(64, 80))


def _datamodule(root: Path, body, workers: int, **kwargs) -> DenseHMRDataModule:
    spec = {"name": "f", "root": str(root), "densepose_json": "densepose_val.json", "smpl_npz": "smpl_val.npz"}
    options = {"image_size": (32, 32), "batch_size": 2, "num_workers": workers, "body": body, **kwargs}
    return DenseHMRDataModule(train=[spec], val=[spec], **options)


def _first_error(loader) -> DataError:
    with pytest.raises(DataError) as info:
        list(loader)
    return info.value


def test_a_data_error_in_a_worker_reaches_the_user_as_the_same_one_line(fixture_data, tmp_path, capsys):
    from test_transforms import fake_body

    from densehmr.train import fail_clearly

    body = fake_body(tmp_path / "body")
    (fixture_data / "images" / "000002.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    errors = []
    for workers in (0, 2):
        datamodule = _datamodule(fixture_data, body, workers)
        datamodule.setup("validate")
        errors.append(_first_error(datamodule.val_dataloader()))
    alone, in_worker = (str(e) for e in errors)
    assert alone == f"{fixture_data / 'images' / '000002.jpg'}, annotation 3, field 'file_name': not a readable image"
    assert in_worker == alone

    def fails(cfg):
        raise errors[1]

    with pytest.raises(SystemExit) as exit_info:
        fail_clearly(fails, None)
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {alone}\n"


def _rewrite_json(root: Path, change) -> Path:
    path = root / "densepose_val.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_an_empty_split_is_one_line_naming_its_file(fixture_data, tmp_path):
    from test_transforms import fake_body

    path = _rewrite_json(fixture_data, lambda d: d.update(annotations=[]))
    datamodule = _datamodule(fixture_data, fake_body(tmp_path / "body"), 0)
    with pytest.raises(DataError) as info:
        datamodule.setup("fit")
    assert str(info.value) == f"{path}, field 'annotations': no person to use (train split)"


def test_a_train_split_smaller_than_one_batch_is_refused(fixture_data, tmp_path):
    from test_transforms import fake_body

    datamodule = _datamodule(fixture_data, fake_body(tmp_path / "body"), 0, batch_size=8)  # 6 people
    datamodule.setup("fit")
    with pytest.raises(DataError, match=r"^train split \(.*densepose_val.json\): 6 samples per epoch, fewer than one "
                                        r"batch of 8, so no step would train"):
        datamodule.train_dataloader()


def _npz(root: Path, **changes) -> Path:
    path = root / "smpl_val.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_an_npz_with_no_rows_is_one_line(fixture_data):
    with np.load(fixture_data / "smpl_val.npz") as data:
        empty = {k: data[k][:0] for k in data.files}
    path = fixture_data / "smpl_val.npz"
    np.savez(path, **empty)
    with pytest.raises(DataError) as info:
        SpinNpzReader(path, fixture_data / "images", BadSampleLog("raise"))
    assert str(info.value) == f"{path}, field 'imgname': no rows (the file holds no person)"


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("keypoints", 1e39, "outside the image"),  # finite in float64, inf in float32
    ("keypoints", -200.0, "outside the image"),  # 80 px wide image: more than a width to its left
    ("area", 1e39, "larger than the image"),
])
def test_densepose_values_beyond_the_image_are_refused(fixture_data, field, value, reason):
    def change(data):
        ann = data["annotations"][1]
        if field == "keypoints":
            ann["keypoints"][3] = value
        else:
            ann[field] = value

    path = _rewrite_json(fixture_data, change)
    with pytest.raises(DataError) as info:
        DensePoseCocoReader(path, fixture_data / "images", BadSampleLog("raise"))
    assert str(info.value) == f"{path}, annotation 2, field '{field}': {reason}"


def _npz_with(root: Path, key: str, row: int, index, value) -> Path:
    with np.load(root / "smpl_val.npz") as data:
        array = data[key].astype(np.float64)
    array[(row, *np.atleast_1d(index))] = value
    return _npz(root, **{key: array})


@pytest.mark.parametrize(("key", "index", "value", "reason"), [
    ("part", (4, 0), 1e39, "beyond 100000 px"),
    ("center", 1, -2e5, "beyond 100000 px"),
    ("S", (3, 2), 1e39, "beyond 1000 m"),
    ("S", (3, 0), 4.0, "a joint over 3 m from the body's centre"),
    ("pose", 5, 40.0, "a rotation beyond 12.57 rad"),
    ("shape", 0, 50.0, "beyond ±20"),
    ("cam_t", 0, 1e39, "beyond 1000 m"),
])
def test_npz_values_that_are_no_persons_are_refused(fixture_data, key, index, value, reason):
    path = _npz_with(fixture_data, key, 2, index, value)
    with pytest.raises(DataError) as info:
        SpinNpzReader(path, fixture_data / "images", BadSampleLog("raise"))
    assert str(info.value) == f"{path}, annotation 3, field '{key}': {reason}"


def test_the_fixture_data_itself_passes_every_check(fixture_data):
    assert len(SpinNpzReader(fixture_data / "smpl_val.npz", fixture_data / "images", BadSampleLog("raise"))) == 6
    assert len(DensePoseCocoReader(fixture_data / "densepose_val.json", fixture_data / "images",
                                   BadSampleLog("raise"))) == 6


@pytest.mark.slow
def test_training_on_a_split_smaller_than_a_batch_stops_with_one_line(tiny_synthetic, tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "densehmr.train", "method=dct", "backbone=mobilenet_v2", "image_size=[64,64]",
         f"data.train.0.root={tiny_synthetic / 'train'}", f"data.val.0.root={tiny_synthetic / 'val'}",
         "data.num_workers=0", "method.batch_size=64", "logger=none", f"run_dir={run}"],
        cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(lines) == 1 and "samples per epoch, fewer than one batch of 64" in lines[0]
    assert not (run / "metrics.json").exists()
