"""Backbone pretraining: hand-checked targets and metrics, a held-out split that never reads val, and a
pretraining run whose shipped weights load by name and are verified by their card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import datamodules.datamodule as dm
from densehmr.nn.backbones import build_backbone, shipped
from densehmr.pretrain.data import HeldOutTrainData
from densehmr.pretrain.network import sample_map
from densehmr.pretrain.objective import (
    IGNORE,
    heatmap_argmax,
    joints3d_targets,
    keypoint_targets,
    part_targets,
    summarize,
    surface_targets,
)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


# ----------------------------------------------------------------------------- targets and metrics
def test_a_keypoint_on_a_cell_centre_peaks_there_and_argmax_returns_it():
    stride, size = 4, (8, 8)
    # Cell (row 5, col 2) has its centre at crop px (2 * 4 + 1.5, 5 * 4 + 1.5).
    kp2d = torch.tensor([[[9.5, 21.5, 2.0], [9.5, 21.5, 0.0], [40.0, 3.0, 2.0]]])
    target, valid = keypoint_targets(kp2d, size, stride)
    assert valid.tolist() == [[True, False, False]]  # invisible; outside the 32 px crop
    assert target.sum(-1) == pytest.approx(torch.ones(1, 3))
    assert int(target[0, 0].argmax()) == 5 * 8 + 2
    # Its neighbours one cell away weigh exp(-1/2) of the peak (sigma = 1 cell).
    peak = target[0, 0].view(8, 8)
    assert float(peak[5, 3] / peak[5, 2]) == pytest.approx(float(torch.exp(torch.tensor(-0.5))), rel=1e-5)
    assert heatmap_argmax(target.view(1, 3, 8, 8), stride)[0, 0].tolist() == [9.5, 21.5]


def test_part_targets_take_each_cells_majority_and_ignore_unannotated_people():
    parts = torch.zeros(2, 8, 8, dtype=torch.long)
    parts[:, 4:, :4] = 3
    parts[:, 0, 0] = 5  # one pixel of sixteen: the top-left cell stays background
    parts[:, 1:4, 5:8] = 7  # nine of sixteen, none at the cell's top-left pixel
    batch = {"mask_parts": parts, "has_mask_parts": torch.tensor([True, False])}
    labels = part_targets(batch, (2, 2))
    assert labels[0].tolist() == [[0, 7], [3, 0]]
    assert (labels[1] == IGNORE).all()


def test_surface_targets_are_barycentric_mixes_of_template_corners():
    template = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    batch = {
        "dp_face": torch.tensor([[1, 0]]),
        "dp_bary": torch.tensor([[[0.0, 0.0, 1.0], [0.25, 0.25, 0.5]]]),
        "dp_valid": torch.tensor([[True, False]]),
    }
    points, valid = surface_targets(batch, template, faces)
    assert points[0].tolist() == [[0.0, 0.0, 3.0], [0.25, 1.0, 0.0]]
    assert valid.tolist() == [[True, False]]


def test_joints3d_targets_are_pelvis_relative_and_need_a_pelvis():
    kp3d = torch.zeros(2, 17, 4)
    kp3d[..., 3] = 1
    kp3d[:, :, 2] = 5.0
    kp3d[:, 1, 0] = 0.2
    kp3d[1, 0, 3] = 0  # no pelvis: nothing is relative to it
    joints, valid = joints3d_targets({"kp3d": kp3d, "has_kp3d": torch.tensor([True, True])})
    assert joints[0, 1].tolist() == pytest.approx([0.2, 0.0, 0.0]) and joints[0, :, 2].abs().max() == 0
    assert valid[0].all() and not valid[1].any()


def test_sample_map_reads_cell_centres_exactly_and_interpolates_between():
    values = torch.arange(16.0).view(1, 1, 4, 4)
    xy = torch.tensor([[[1.5, 1.5], [13.5, 5.5], [3.5, 1.5]]])  # cells (0, 0), (1, 3), halfway (0, 0)-(0, 1)
    assert sample_map(values, xy, stride=4)[0, :, 0].tolist() == [0.0, 7.0, 0.5]


def test_summarize_hand_solved_confusion():
    confusion = torch.zeros(15, 15, dtype=torch.long)
    confusion[0, 0], confusion[0, 1], confusion[1, 1], confusion[2, 1] = 6, 2, 3, 1
    totals = {
        "confusion": confusion,
        "pck_correct": torch.tensor(3), "pck_count": torch.tensor(4),
        "surface_error": torch.tensor(0.5), "surface_count": torch.tensor(10),
        "joint_error": torch.tensor(1.2), "joint_count": torch.tensor(12),
    }
    out = summarize(totals)
    assert out["parts/pixel_acc"] == pytest.approx(100 * 9 / 12)
    # IoU: background 6 / 8, part 1 3 / 6, part 2 0 / 1, over the three classes with ground truth.
    assert out["parts/miou"] == pytest.approx(100 * (6 / 8 + 3 / 6 + 0) / 3)
    assert out["keypoints/pck"] == pytest.approx(75.0)
    assert out["surface/error_mm"] == pytest.approx(50.0) and out["joints3d/mpjpe_mm"] == pytest.approx(100.0)


# ----------------------------------------------------------------------------- data
def test_held_out_images_never_train_and_the_val_split_is_never_read(tiny_synthetic, monkeypatch):
    read_roots = []
    make_reader = dm.make_reader

    def spy(spec, bad):
        read_roots.append(Path(spec.root))
        return make_reader(spec, bad)

    monkeypatch.setattr(dm, "make_reader", spy)
    train = {"name": "synthetic", "root": str(tiny_synthetic / "train"), "densepose_json": "densepose_train.json",
             "smpl_npz": "smpl_train.npz"}
    val = {**train, "root": str(tiny_synthetic / "val"), "densepose_json": "densepose_val.json"}
    data = HeldOutTrainData(holdout_every=2, train=[train], val=[val], num_workers=0, batch_size=2)
    data.setup("fit")
    assert read_roots and set(read_roots) == {tiny_synthetic / "train"}

    def image_ids(subsets):
        return [subset.dataset.reader.raw(i).image_id for subset in subsets for i in subset.indices]

    trained, held_out = image_ids(data.datasets["train"]), image_ids(data.datasets["val"])
    assert trained and held_out and not set(trained) & set(held_out)
    assert all(i % 2 == 0 for i in held_out) and all(i % 2 for i in trained)
    assert len(trained) + len(held_out) == len(data.datasets["train"][0].dataset)
    batch = next(iter(data.val_dataloader()))
    assert int(batch["image_id"][0]) % 2 == 0


# ----------------------------------------------------------------------------- shipped weights
@pytest.fixture
def ship_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "FOLDER", tmp_path / "pretrained")
    return tmp_path / "pretrained"


def test_pretraining_ships_a_backbone_that_loads_by_name(tiny_synthetic, ship_folder, tmp_path):
    from densehmr.pretrain.__main__ import pretrain

    overrides = [
        f"data.train.0.root={tiny_synthetic / 'train'}", "data.num_workers=0", "batch_size=4", "holdout_every=2",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "image_size=[64,64]", "logger=none",
        f"run_dir={tmp_path / 'run'}", f"out_dir={ship_folder}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    path = pretrain(cfg)

    card = json.loads((ship_folder / "resnet18_synthetic.json").read_text())
    assert card["sha256"] == shipped.sha256(path) and card["steps"] == 2 and card["bytes"] == path.stat().st_size
    assert set(card["held_out_metrics"]) >= {"holdout/parts/miou", "holdout/keypoints/pck", "holdout/joints3d/mpjpe_mm"}
    assert not card["data"]["val_split_read"]
    saved = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())

    loaded = build_backbone("resnet18", pretrained="synthetic").state_dict()
    assert all(torch.equal(loaded[k], saved[k].to(loaded[k].dtype)) for k in saved)
    fresh = build_backbone("resnet18", pretrained="none").state_dict()
    assert not torch.equal(fresh["conv1.weight"], loaded["conv1.weight"])

    with open(path, "r+b") as fh:  # one flipped byte
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="sha256 differs"):
        build_backbone("resnet18", pretrained="synthetic")


def test_missing_or_unknown_pretrained_weights_are_one_clear_line(ship_folder):
    with pytest.raises(ValueError, match="no synthetic weights ship for hrnet_w48"):
        build_backbone("hrnet_w48", pretrained="synthetic")
    with pytest.raises(ValueError, match="expected one of none, synthetic"):
        build_backbone("resnet18", pretrained="imagenet")
