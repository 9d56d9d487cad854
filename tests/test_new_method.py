"""Adding a method is its module plus its config (docs/architecture.md, "Adding a method"): a toy fifth
method, written here into a copy of configs/ and a folder on the Python path (nothing is added to the
repository), is listed by every command that lists methods, trains, evaluates, and runs in the demo and
the ONNX export."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import densehmr.evaluate
import densehmr.train
from densehmr.methods.registry import LEADING, MethodConfigError, method_class, method_names, method_target

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "tests" / "data" / "person.jpg"

TOY_MODULE = '''
"""A toy method: a person mask and DensePose parts from one convolution on the backbone's finest map."""

import torch
import torch.nn.functional as F
from torch import nn

from densehmr.losses.densepose import part_cross_entropy
from densehmr.methods.base import BaseMethod, Prediction
from densehmr.nn.backbones import build_backbone


class ToyMethod(BaseMethod):
    name = "toy"

    def __init__(self, backbone, *, kernel, **base):
        """backbone: the backbone group's node; kernel: the `toy.kernel` option; base: BaseMethod's."""
        super().__init__(**base)
        self.save_hyperparameters()
        self.backbone = build_backbone(**backbone)
        self.head = nn.Conv2d(self.backbone.out_channels[0], 1 + 25, kernel, padding=kernel // 2)

    def forward(self, image):
        """image (B, 3, H, W) -> mask_logits (B, H, W), part_logits (B, 25, H, W)."""
        maps = F.interpolate(self.head(self.backbone(image)[0]), size=image.shape[-2:], mode="bilinear")
        return {"mask_logits": maps[:, 0], "part_logits": maps[:, 1:]}

    def loss_terms(self, out, batch, targets):
        terms = {}
        if self.active("mask"):
            keep = batch["has_mask"]
            terms["mask"] = F.binary_cross_entropy_with_logits(out["mask_logits"][keep], batch["mask"][keep])
        if self.active("part_ce"):
            terms["part_ce"] = part_cross_entropy(
                out["part_logits"], batch["dp_xy"], batch["dp_I"], batch["dp_valid"] & batch["has_dp"][:, None],
                tuple(batch["image"].shape[-2:]),
            )
        return terms

    def predict(self, out, batch, targets=None):
        """mask (B, H, W); iuv (B, 3, H, W): the arg-max part inside the mask, U = V = 0.5 (no UV head)."""
        mask = (out["mask_logits"] > 0).float()
        part = out["part_logits"].argmax(1).float() * mask
        half = torch.full_like(part, 0.5) * (part > 0)
        return Prediction(iuv=torch.stack([part, half, half], 1), mask=mask)
'''

TOY_CONFIG = """\
# @package _global_
# A toy method: person mask and DensePose parts from one convolution.
method:
  name: toy
  batch_size: 4
  cpu_steps: 2000
  lr: 1.0e-3
  module:
    _target_: toy_method.ToyMethod
    loss_weights: {mask: 1.0, part_ce: 1.0}
toy:                 # method options: toy.<key>=value on the command line
  kernel: 1          # the head's convolution
"""


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    """A copy of configs/ with configs/method/toy.yaml added, made the configs every command reads, and
    the toy's module importable; returns the configs folder."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "method" / "toy.yaml").write_text(TOY_CONFIG)
    code = tmp_path / "code"
    code.mkdir()
    (code / "toy_method.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setattr(densehmr.train, "CONFIG_DIR", str(configs))
    monkeypatch.setattr(densehmr.evaluate, "CONFIG_DIR", str(configs))
    return configs


def test_the_methods_are_the_configs_in_a_stable_order(tmp_path):
    assert method_names() == list(LEADING)
    assert method_target("dct") == "densehmr.methods.dct.DCT"
    (tmp_path / "method").mkdir()
    for name in ("zeta", "densereg", "alpha", "meshpose"):
        config = f"method: {{name: {name}, cpu_steps: 9, module: {{_target_: a.B}}}}\n"
        (tmp_path / "method" / f"{name}.yaml").write_text(config)
    assert method_names(tmp_path) == ["meshpose", "densereg", "alpha", "zeta"]


def test_a_method_config_that_cannot_name_its_class_fails_in_one_line(tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "wrong.yaml").write_text("method: {name: other, module: {_target_: a.B}}\n")
    (tmp_path / "method" / "bare.yaml").write_text("method: {name: bare, module: {}}\n")
    (tmp_path / "method" / "nosteps.yaml").write_text("method: {name: nosteps, module: {_target_: a.B}}\n")
    with pytest.raises(MethodConfigError, match=r"wrong.yaml: method.name is 'other', not the file's name 'wrong'"):
        method_target("wrong", tmp_path)
    with pytest.raises(MethodConfigError, match=r"bare.yaml: method.module._target_ must be a dotted class path"):
        method_target("bare", tmp_path)
    with pytest.raises(MethodConfigError, match=r"nosteps.yaml: method.cpu_steps must be a positive integer .*None"):
        method_target("nosteps", tmp_path)
    with pytest.raises(MethodConfigError, match=r"unknown method 'nope'.*configured: bare, nosteps, wrong"):
        method_target("nope", tmp_path)


def test_a_new_method_is_listed_by_every_command_that_lists_methods(toy, capsys):
    from densehmr.bench.methods import available_methods
    from densehmr.gpu_check.settings import CheckSettings
    from densehmr.studies import compare

    assert method_names() == [*LEADING, "toy"]
    assert method_class("toy").__name__ == "ToyMethod"
    assert available_methods(toy) == [*LEADING, "toy"]
    assert compare.main(["--dry-run", "--runs", "runs/x", "trainer.max_steps=1"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("method=")[1].split()[0] for line in listed] == [*LEADING, "toy"]
    assert all(line.startswith("to run") for line in listed)
    # gpu-check trains each method's paper experiment: the toy has none, so it is not checked.
    assert CheckSettings().methods == LEADING


@pytest.mark.slow
def test_a_new_method_trains_evaluates_and_runs_in_the_demo_and_export(toy, tiny_synthetic, tmp_path):
    from densehmr.demo import main as demo
    from densehmr.evaluate import evaluate
    from densehmr.export import export_and_check

    run_dir = tmp_path / "runs" / "toy" / "r1"
    data = [f"data.train.0.root={tiny_synthetic / 'train'}", f"data.val.0.root={tiny_synthetic / 'val'}",
            "data.num_workers=0", "logger=none", "image_size=[64,64]", "trainer.precision=32-true"]
    with initialize_config_dir(config_dir=str(toy), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "method=toy", *data, "trainer.max_steps=2", "trainer.max_time=null", f"run_dir={run_dir}",
        ])
        eval_cfg = compose(config_name="train", overrides=[
            "method=toy", *data, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "run_id=e1",
        ])
    densehmr.train.train(cfg)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert {"densepose/gps_ap", "densepose/iou_ap", "mask/iou"} <= set(trained)
    assert 0.0 <= trained["mask/iou"] <= 1.0
    assert not any(k.startswith(("mesh/", "keypoints/")) for k in trained)  # it predicts no mesh, no keypoints

    evaluated = evaluate(eval_cfg)  # the checkpoint on the same split: the same numbers
    assert evaluated["mask/iou"] == pytest.approx(trained["mask/iou"], abs=1e-6)

    out = tmp_path / "demo"
    assert demo([str(IMAGE), "--run", str(run_dir), "--method", "toy", "--detector", "whole", "--out", str(out)]) == 0
    record = json.loads((out / "person_jpg.json").read_text())
    assert record["method"] == "toy" and len(record["people"]) == 1

    from densehmr.inference import load_method

    model, _ = load_method(run=run_dir)
    report = export_and_check(model, "toy", str(run_dir), tmp_path / "onnx", repeats=1)
    assert report.max_abs_diff_random < 1e-3
