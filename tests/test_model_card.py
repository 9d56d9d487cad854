"""The model card the demo prints under its pictures: training data kind, validation metrics, steps."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from densehmr.model_card import ModelCard, checkpoint_steps, model_card, training_data, validation_metrics


def config(train: list[str], test=None, val: tuple[str, ...] = ("synthetic",)):
    return OmegaConf.create({
        "backbone": {"name": "resnet18"},
        "data": {"train": [{"name": n} for n in train], "val": [{"name": n} for n in val], "test": test},
    })


def test_training_data_is_synthetic_real_or_both():
    assert training_data(config(["synthetic"])) == ("synthetic", ["synthetic"])
    assert training_data(config(["densepose_coco", "h36m_train"]))[0] == "real"
    assert training_data(config(["densepose_coco", "synthetic"]))[0] == "synthetic + real"


def test_validation_metrics_are_the_plain_keys_unless_a_test_split_is_configured(tmp_path):
    stored = {"densepose/gps_ap": 0.2, "val/densepose/gps_ap": 0.3, "mesh/mpjpe": 100.0, "other/x": 1.0}
    (tmp_path / "metrics.json").write_text(json.dumps(stored))
    metrics, split = validation_metrics(tmp_path, config(["synthetic"]))
    assert metrics == {"densepose/gps_ap": 0.2, "mesh/mpjpe": 100.0} and split == "val (synthetic)"
    metrics, _ = validation_metrics(tmp_path, config(["synthetic"], test=[{"name": "synthetic"}]))
    assert metrics == {"densepose/gps_ap": 0.3}
    (tmp_path / "metrics.json").write_text("{broken")
    assert validation_metrics(tmp_path, config(["synthetic"])) == ({}, None)


def test_card_of_a_run_and_of_a_loose_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 42, "state_dict": {}}, run / "checkpoints" / "last.ckpt")
    (run / "metrics.json").write_text(json.dumps({"mesh/pa_mpjpe": 143.84, "mask/iou": 0.718}))
    card = model_card(run / "checkpoints" / "last.ckpt", "meshpose", config(["densepose_coco"]))
    assert (card.steps, card.backbone, card.training_data) == (42, "resnet18", "real")
    first, data, metrics = card.lines()
    assert first.endswith("last.ckpt (resnet18, 42 steps)") and data == "trained on real data (densepose_coco)"
    assert metrics == "val (synthetic) split: mask IoU 71.8, PA-MPJPE (mm) 143.8 (APs and IoU x100)"
    loose = ModelCard(checkpoint="x.ckpt", method="dct")
    assert loose.lines()[1].startswith("training data unknown") and loose.lines()[2].startswith("no validation")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    assert checkpoint_steps(tmp_path / "junk.ckpt") is None
