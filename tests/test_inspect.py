"""`python -m datamodules.inspect` on files in the real layouts: the counts it reports against what the
files were built with, its problem lines, JSON-only stdout and the drawn grid."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from real_layouts import (
    densepose_json,
    densepose_person,
    intrinsics,
    keypoints_of,
    people,
    spin_focal,
    square_box,
    write_coco_npz,
    write_h36m_npz,
    write_images,
)

from datamodules.inspect import main

CENTER, SCALE = np.array([80.0, 60.0]), 0.5
K = intrinsics(spin_focal(SCALE), CENTER)


@pytest.fixture(scope="module")
def persons(body):
    return people(body, 4, seed=1)


def _run(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_config_summary_counts_supervision_and_missing_images(tmp_path, persons, capsys):
    names = [f"images/S9_Walking.60457274_{i + 1:06d}.jpg" for i in range(4)]
    write_h36m_npz(tmp_path / "h36m_train.npz", persons, names, True, [CENTER] * 4, [SCALE] * 4)
    write_h36m_npz(tmp_path / "h36m_valid_protocol2.npz", persons[:2], names[:2], False, [CENTER] * 2, [SCALE] * 2)
    write_images(tmp_path, names[:3])  # the fourth image is missing
    grid = tmp_path / "grid.png"
    summary = _run(capsys, "--config", "h36m", f"root={tmp_path}", "--grid", str(grid), "--samples", "4")
    train, val = summary["sources"]
    assert (train["name"], train["samples"], train["persons"]) == ("h36m_train", 4, 4)
    assert train["images"] == {"found": 3, "missing": 1}
    assert train["supervision"] == {"has_dp": 0, "has_kp2d": 4, "has_kp3d": 4, "has_smpl": 0, "has_cam": 4,
                                    "has_mask": 0}
    assert val["supervision"]["has_kp3d"] == 2 and val["supervision"]["has_cam"] == 0
    assert train["problems"] == [f"1 of 4 images missing, e.g. {tmp_path / names[3]}"]
    # Two samples drawn per source, the missing image passed over; one row of four tiles.
    assert summary["drawn"] == 3 and cv2.imread(str(grid)).shape[:2] == (128 + 28, 4 * 128)


def test_files_summary_reports_joins_dropped_records_and_a_doubled_folder(tmp_path, persons, capsys):
    images = [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 160, "height": 120}]
    boxes = [square_box([50.0, 60.0], 0.4), square_box([110.0, 60.0], 0.4)]
    kps = [keypoints_of(K, p) for p in persons[:2]]
    anns = [densepose_person(11 + i, 1, boxes[i], kps[i], seed=i) for i in range(2)]
    anns.append({**anns[0], "id": 13, "dp_I": [30.0] * 20})  # a bad record
    dp = densepose_json(tmp_path / "dp.json", images, anns)
    write_images(tmp_path / "train2014", [images[0]["file_name"]])
    name = f"train2014/{images[0]['file_name']}"
    npz = write_coco_npz(tmp_path / "fits.npz", [name, name], [boxes[1], square_box([20.0, 20.0], 0.3)],
                         [kps[1], kps[0]], fits=persons[:2])
    summary = _run(capsys, "--densepose-json", str(dp), "--image-root", str(tmp_path / "train2014"),
                   "--npz", str(npz), "--box-padding", "1.2", "--npz", str(npz), "--image-root",
                   str(tmp_path / "train2014"), "--grid", "")
    joined, alone = summary["sources"]
    assert (joined["samples"], joined["persons"]) == (2, 3)
    assert joined["join"] == {"key": "image name + box", "persons": 2, "rows": 2, "joined": 1,
                              "persons_unjoined": 1, "rows_unjoined": 1, "image_conflicts": 0}
    assert joined["supervision"]["has_smpl"] == 1 and joined["supervision"]["has_cam"] == 1
    assert joined["supervision"]["has_dp"] == 2 and joined["supervision"]["has_mask"] == 2
    assert "1 records dropped: dp_I: outside 1..24" in joined["problems"]
    assert any("joined by image name + box: 1 of 2 persons, 1 of 2 rows unjoined" in p for p in joined["problems"])
    assert alone["images"] == {"found": 0, "missing": 1}
    assert "already start with 'train2014/'" in alone["problems"][0]
    assert summary["grid"] is None


def test_text_output_has_one_line_per_problem(tmp_path, persons, capsys):
    write_h36m_npz(tmp_path / "p2.npz", persons[:1], ["images/x.jpg"], False, [CENTER], [SCALE])
    assert main(["--npz", str(tmp_path / "p2.npz"), "--image-root", str(tmp_path), "--grid", ""]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "== p2"
    assert [ln.strip() for ln in lines if "problem:" in ln] == [
        f"problem: 1 of 1 images missing, e.g. {tmp_path / 'images/x.jpg'}"
    ]
