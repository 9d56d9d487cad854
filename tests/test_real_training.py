"""Training and evaluation on files in the real layouts, which carry no cameras: the fitted cameras switch
on every 3D term and the rendered auxiliary IUV, protocol 2 is scored from S alone, and a configured
loss term that no sample supervises is named once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from method_factory import make_method
from real_layouts import (
    intrinsics,
    keypoints_of,
    people,
    spin_focal,
    square_box,
    write_coco_npz,
    write_h36m_npz,
    write_images,
)

from datamodules.datamodule import DenseHMRDataModule
from densehmr.train import CONFIG_DIR, train

CENTER, SCALE = np.array([80.0, 60.0]), 0.5
K = intrinsics(spin_focal(SCALE), CENTER)


@pytest.fixture(scope="module")
def root(tmp_path_factory, body) -> Path:
    """Human3.6M (train: S + part; protocol 2: S only) and COCO with EFT fits, none with a camera."""
    root = tmp_path_factory.mktemp("real")
    persons = people(body, 4, seed=2)
    h36m = [f"images/S1_Posing.60457274_{i + 1:06d}.jpg" for i in range(4)]
    write_h36m_npz(root / "h36m_train.npz", persons, h36m, True, [CENTER] * 4, [SCALE] * 4)
    write_h36m_npz(root / "h36m_valid_protocol2.npz", persons[:2], h36m[:2], False, [CENTER] * 2, [SCALE] * 2)
    coco = [f"train2014/COCO_train2014_{i:012d}.jpg" for i in range(4)]
    write_coco_npz(root / "coco_2014_train_eft.npz", coco, [square_box(CENTER, SCALE)] * 4,
                   [keypoints_of(K, p) for p in persons], fits=persons)
    write_images(root, h36m + coco)
    return root


def _batch(body, root: Path) -> dict:
    """One batch of four EFT rows and four Human3.6M frames, unaugmented."""
    spec = {"image_root": ".", "box_padding": 1.2}
    module = DenseHMRDataModule(
        train=[{"name": "coco", "smpl_npz": "coco_2014_train_eft.npz", **spec},
               {"name": "h36m", "smpl_npz": "h36m_train.npz", **spec}],
        root=str(root), image_size=(64, 64), batch_size=8, num_workers=0, augment={"enabled": False}, body=body,
        samples_per_epoch=8,
    )
    module.setup("fit")
    from datamodules.collate import collate_samples

    samples = [d[i] for d in module.datasets["train"] for i in range(4)]
    batch = collate_samples(samples)
    batch.pop("skipped")
    return batch


def test_fitted_cameras_switch_on_the_3d_terms_and_the_rendered_iuv(body, root):
    batch = _batch(body, root)
    assert batch["has_cam"].all() and batch["has_smpl"].tolist() == [True] * 4 + [False] * 4
    assert batch["has_kp3d"].tolist() == [False] * 4 + [True] * 4
    no_camera = {**batch, "has_cam": torch.zeros(8, dtype=torch.bool)}  # what the files alone give
    meshpose = make_method("meshpose", loss_weights={k: 1.0 for k in ("vertex", "edge", "normal", "joints3d")},
                           neck_channels=32, lifting_hidden=64, lifting_bins=32)
    pymaf = make_method("pymaf", loss_weights={"aux_iuv": 1.0}, seed=None, channels=32, hidden=64)
    for method, terms in ((meshpose, ("vertex", "edge", "normal", "joints3d")), (pymaf, ("aux_iuv",))):
        with torch.no_grad():
            out = method(batch["image"])
            with_cam = method.loss_terms(out, batch, method.targets(batch))
            without = method.loss_terms(out, no_camera, method.targets(no_camera))
        for term in terms:
            assert float(with_cam[term]) > 0 and float(without[term]) == 0, term


@pytest.mark.slow
def test_one_step_on_h36m_then_protocol_2_from_s(root, tmp_path, caplog):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "method=pymaf", "data=h36m", f"data.root={root}", "data.num_workers=0", "method.batch_size=4",
            "image_size=[64,64]", "logger=none", f"run_dir={tmp_path / 'run'}", "trainer.max_steps=1",
            "trainer.max_epochs=1", "log_images_every_n_steps=0",
        ])
    with caplog.at_level(logging.WARNING, logger="densehmr.methods.base"):
        train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["mesh/mpjpe"]) and np.isfinite(metrics["mesh/pa_mpjpe"])
    # Human3.6M has no SMPL parameters: PyMAF's pose, betas and rendered IUV terms supervise nothing.
    said = [r.getMessage() for r in caplog.records if "no supervised sample" in r.getMessage()]
    unsupervised = sorted(message.split("'")[1] for message in said)
    assert unsupervised == ["aux_iuv", "betas", "pose"]
