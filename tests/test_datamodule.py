"""Collate padding and flags, read-time errors and skip mode, the DataModule (mixing, workers, configs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from datamodules.benchmark import write_fixture_dataset
from datamodules.collate import collate_samples
from datamodules.datamodule import DenseHMRDataModule
from datamodules.dataset import DenseHMRDataset, Skipped, decode_reduction, read_image
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader
from datamodules.transforms import AugmentConfig, AugmentParams

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def toy_body(tmp_path_factory):
    from test_transforms import fake_body

    return fake_body(tmp_path_factory.mktemp("body"))


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixture_dataset(tmp_path_factory.mktemp("data"), num_images=6, people_per_image=2, image_hw=(96, 128))


def _spec(root: Path, name: str = "fixture", **extra) -> dict:
    return {
        "name": name,
        "root": str(root),
        "densepose_json": "densepose_train.json",
        "smpl_npz": "smpl_train.npz",
        **extra,
    }


def _reader(root: Path) -> DensePoseCocoReader:
    from datamodules.readers import SpinNpz

    log = BadSampleLog("raise")
    return DensePoseCocoReader(
        root / "densepose_train.json", root / "images", log, SpinNpz(root / "smpl_train.npz", log)
    )


def _copy_fixture(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_collate_pads_ragged_points_and_keeps_flags(toy_body, fixture_root):
    from dataclasses import replace

    reader = _reader(fixture_root)
    dataset = DenseHMRDataset(reader, toy_body, (64, 48))
    raw = reader.raw(0)
    few = replace(raw, dense=replace(raw.dense, **{k: getattr(raw.dense, k)[:7] for k in ("x", "y", "part", "u", "v")}))
    bare = replace(raw, dense=None, keypoints=None, body=None, dp_masks=None, segmentation=None)
    image, _ = read_image(raw.image_path, raw.image_size, raw.ann_id)
    samples = [dataset.build(r, image, AugmentParams()) for r in (raw, few, bare)]
    batch = collate_samples([samples[0], Skipped(("file_name: missing file",)), samples[1], samples[2]])

    p = len(raw.dense.x)
    assert batch["image"].shape == (3, 3, 64, 48) and batch["mask"].shape == (3, 64, 48)
    assert batch["dp_xy"].shape == (3, p, 2) and batch["dp_bary"].shape == (3, p, 3)
    assert batch["dp_I"].dtype == torch.long and batch["dp_valid"].dtype == torch.bool
    assert not batch["dp_valid"][1, 7:].any() and not batch["dp_valid"][2].any()
    assert (batch["dp_I"][1, 7:] == 0).all() and torch.equal(batch["dp_xy"][1, :7], samples[1]["dp_xy"])
    assert batch["has_dp"].tolist() == [True, True, False]
    assert batch["has_kp2d"].tolist() == [True, True, False]
    assert batch["has_smpl"].tolist() == [True, True, False] and batch["has_cam"].tolist() == [True, True, False]
    assert batch["has_mask"].tolist() == [True, True, False] and batch["has_mask_parts"].tolist() == [True, True, False]
    assert batch["skipped"] == {"file_name: missing file": 1}
    shapes = {
        "kp2d": (17, 3),
        "kp3d": (17, 4),
        "global_orient": (3,),
        "body_pose": (69,),
        "betas": (10,),
        "cam_K": (3, 3),
        "cam_t": (3,),
        "bbox": (4,),
        "area": (),
        "affine": (2, 3),
        "image_id": (),
        "ann_id": (),
    }
    for key, shape in shapes.items():
        assert batch[key].shape == (3, *shape), key
    assert batch["ann_id"].tolist() == [raw.ann_id] * 3
    assert collate_samples([Skipped(("a",)), Skipped(("a", "b"))]) == {"skipped": {"a": 2, "b": 1}}


def test_dp_masks_zoomed_to_the_box_like_the_evaluator(toy_body, fixture_root):
    """The crop's part map equals the 256x256 part masks resized into the box (nearest), then cropped."""
    import cv2

    from datamodules.readers.densepose_coco import part_label_map

    reader = _reader(fixture_root)
    raw = reader.raw(1)
    dataset = DenseHMRDataset(reader, toy_body, (80, 80))
    image, _ = read_image(raw.image_path, raw.image_size, raw.ann_id)
    sample = dataset.build(raw, image, AugmentParams())
    # Independent route: paint the box in a full-size label image, then sample it at crop pixel centres.
    h, w = raw.image_size
    x, y, bw, bh = raw.bbox
    full = np.zeros((h, w), dtype=np.uint8)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    gx, gy = ((cols - x) / bw * 256).astype(int), ((rows - y) / bh * 256).astype(int)
    inside = (gx >= 0) & (gx < 256) & (gy >= 0) & (gy < 256)
    full[inside] = part_label_map(raw.dp_masks)[gy[inside], gx[inside]]
    to_image = sample["affine"].double().numpy()
    cc, rr = np.meshgrid(np.arange(80) + 0.5, np.arange(80) + 0.5)
    src = np.stack([cc, rr], -1) @ to_image[:, :2].T + to_image[:, 2]
    expected = cv2.remap(
        full, (src[..., 0] - 0.5).astype(np.float32), (src[..., 1] - 0.5).astype(np.float32), cv2.INTER_NEAREST
    )
    agree = (sample["mask_parts"].numpy() == expected).mean()
    assert agree > 0.97 and sample["mask_parts"].max() > 0
    assert torch.equal(sample["mask"] > 0, sample["mask_parts"] > 0)


def test_reduced_jpeg_decoding_gives_the_same_crop(toy_body, fixture_root):
    reader = _reader(fixture_root)
    raw = reader.raw(2)
    dataset = DenseHMRDataset(reader, toy_body, (16, 16))
    params = AugmentParams()
    assert decode_reduction(dataset.crop_affine(raw, params)) >= 2
    full, r1 = read_image(raw.image_path, raw.image_size, raw.ann_id)
    half, r2 = read_image(raw.image_path, raw.image_size, raw.ann_id, reduction=2)
    assert (r1, r2) == (1, 2) and half.shape[:2] == (48, 64)
    a = dataset.build(raw, full, params)["image"]
    b = dataset.build(raw, half, params, reduction=2)["image"]
    assert (a - b).abs().mean() < 0.1  # normalized units; aliasing differs, content matches
    assert (a - b.flip(-1)).abs().mean() > 2 * (a - b).abs().mean()


def test_read_time_errors_raise_or_are_skipped(toy_body, fixture_root, tmp_path):
    root = _copy_fixture(fixture_root, tmp_path / "data")
    data = json.loads((root / "densepose_train.json").read_text())
    missing, corrupt = data["images"][0]["file_name"], data["images"][1]["file_name"]
    (root / "images" / missing).unlink()
    (root / "images" / corrupt).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    reader = _reader(root)
    first_ann = reader.raw(0).ann_id

    with pytest.raises(DataError) as info:
        DenseHMRDataset(reader, toy_body, (32, 32))[0]
    assert f"{missing}, annotation {first_ann}, field 'file_name': missing file" in str(info.value)

    evaluation = DenseHMRDataset(reader, toy_body, (32, 32), on_bad_sample="skip")
    kinds = [s.kinds for s in (evaluation[i] for i in range(len(reader))) if isinstance(s, Skipped)]
    assert kinds == [("file_name: missing file",)] * 2 + [("file_name: not a readable image",)] * 2

    training = DenseHMRDataset(reader, toy_body, (32, 32), augment=AugmentConfig(), on_bad_sample="skip")
    batch = collate_samples([training[i] for i in range(len(reader))])
    assert len(batch["image"]) == len(reader)  # bad samples replaced by good ones while training
    assert not set(batch["image_id"].tolist()) & {data["images"][0]["id"], data["images"][1]["id"]}
    assert sum(batch["skipped"].values()) >= 4


def test_train_loader_batches_follow_the_contract(toy_body, fixture_root):
    datamodule = DenseHMRDataModule(
        train=[_spec(fixture_root)],
        val=[_spec(fixture_root)],
        image_size=(64, 48),
        batch_size=5,
        num_workers=0,
        body=toy_body,
    )
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 12 // 5  # samples_per_epoch defaults to the dataset size; last partial dropped
    batch = batches[0]
    assert batch["image"].shape == (5, 3, 64, 48) and batch["image"].dtype == torch.float32
    assert abs(float(batch["image"].mean())) < 2.0
    assert batch["has_dp"].all() and batch["has_smpl"].all() and batch["has_kp3d"].all()
    assert (batch["cam_K"][:, 2] == torch.tensor([0.0, 0.0, 1.0])).all()
    val = [next(iter(datamodule.val_dataloader())) for _ in range(2)]
    assert torch.equal(val[0]["image"], val[1]["image"]) and torch.equal(val[0]["dp_xy"], val[1]["dp_xy"])


def test_mixed_sampling_follows_the_ratios(toy_body, fixture_root, tmp_path):
    small = write_fixture_dataset(tmp_path / "small", num_images=3, people_per_image=2, image_hw=(96, 128), seed=1)
    datamodule = DenseHMRDataModule(
        train=[_spec(fixture_root, "big", ratio=3.0), _spec(small, "small", ratio=1.0)],
        num_workers=0,
        body=toy_body,
        samples_per_epoch=4000,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    drawn = np.fromiter(iter(loader.sampler), dtype=np.int64)
    sizes = [len(d) for d in datamodule.datasets["train"]]
    assert sizes == [12, 6] and len(drawn) == 4000
    assert abs((drawn < 12).mean() - 0.75) < 0.03
    assert len(np.unique(drawn[drawn >= 12])) == 6  # every sample of the small set is drawn


def test_workers_reraise_data_error_with_its_type(toy_body, fixture_root, tmp_path):
    root = _copy_fixture(fixture_root, tmp_path / "data")
    for image in (root / "images").iterdir():
        image.unlink()
    datamodule = DenseHMRDataModule(val=[_spec(root)], num_workers=2, body=toy_body, batch_size=2)
    datamodule.setup("validate")
    with pytest.raises(DataError, match="field 'file_name': missing file"):
        next(iter(datamodule.val_dataloader()))


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        assert "skipped" not in batch
        return (self.weight * batch["image"].mean()).sum() + self.weight.square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_skip_counts_are_logged_at_epoch_end(toy_body, fixture_root, tmp_path, caplog):
    root = _copy_fixture(fixture_root, tmp_path / "data")
    data = json.loads((root / "densepose_train.json").read_text())
    (root / "images" / data["images"][0]["file_name"]).unlink()
    data["annotations"][-1]["dp_I"][0] = 30.0
    (root / "densepose_train.json").write_text(json.dumps(data))
    datamodule = DenseHMRDataModule(
        train=[_spec(root)],
        num_workers=0,
        batch_size=4,
        body=toy_body,
        on_bad_sample="skip",
        samples_per_epoch=40,
    )
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with caplog.at_level(logging.WARNING, logger="datamodules.datamodule"):
        trainer.fit(_Tiny(), datamodule=datamodule)
    report = [r.getMessage() for r in caplog.records if "epoch 0 train" in r.getMessage()]
    assert len(report) == 1
    assert "'file_name: missing file'" in report[0] and "'dp_I: outside 1..24': 1" in report[0]
    assert trainer.callback_metrics["data/skipped_train"] > 0


@pytest.mark.parametrize("name", ["synthetic", "densepose_coco", "threedpw", "h36m", "mpi_inf_3dhp", "coco", "mixed"])
def test_data_configs_instantiate(name, toy_body, fixture_root):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="data/" + name)
    # A Body is a dataclass, which OmegaConf would try to turn into a config: pass it to the partial.
    make = instantiate(cfg.data, _partial_=True)
    datamodule = make(body=toy_body)
    assert isinstance(datamodule, DenseHMRDataModule) and datamodule.specs["train"]
    assert datamodule.image_size == (128, 128) and datamodule.augment.flip_prob == 0.5
    if name == "mixed":
        assert [s.ratio for s in datamodule.specs["train"]] == [0.3, 0.5, 0.2] and len(datamodule.specs["val"]) == 2
    if name == "threedpw":
        assert datamodule.specs["val"][0].box_padding == 1.2 and datamodule.specs["val"][0].densepose_json is None
    if name == "h36m":  # one root to set; imgname already starts with images/
        moved = make(body=toy_body, root="/data/h36m")
        assert moved.specs["val"][0].path(moved.specs["val"][0].image_root) == Path("/data/h36m")
        assert moved.specs["train"][0].path("h36m_train.npz") == Path("/data/h36m/h36m_train.npz")
    if name == "synthetic":
        assert datamodule.specs["test"] == datamodule.specs["val"]
        assert datamodule.specs["train"][0].path("images") == Path("data/synthetic/train/images")
        local = make(body=toy_body, train=[_spec(fixture_root)], val=[], num_workers=0, batch_size=2)
        local.setup("fit")
        assert next(iter(local.train_dataloader()))["image"].shape == (2, 3, 128, 128)


@pytest.mark.parametrize("flip", [False, True])
def test_precomputed_surface_points_equal_live_mapping(toy_body, fixture_root, flip):
    reader = _reader(fixture_root)
    dataset = DenseHMRDataset(reader, toy_body, (64, 64), augment=AugmentConfig())
    assert dataset.surface is not None
    raw = reader.raw(3)
    image, _ = read_image(raw.image_path, raw.image_size, raw.ann_id)
    params = AugmentParams(rotation=10.0, flip=flip)
    table = dataset.build(raw, image, params)
    dataset.surface = None
    live = dataset.build(raw, image, params)
    assert table.keys() == live.keys()
    for key in table:
        assert torch.equal(table[key], live[key]), key
