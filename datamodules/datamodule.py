"""`DenseHMRDataModule`: train/val/test splits, each a list of datasets mixed by sampling ratio.

Built from configs/data/*.yaml (Hydra `_target_`). A dataset entry (paths relative to its `root`, which
is itself relative to the module's `root`):
  name, ratio (train only: share of the samples drawn from it), root,
  densepose_json + image_root [+ smpl_npz, box_padding]  -> DensePose-COCO people (+ SMPL, joints, camera
                                                            of the npz rows that join them by identity),
  or smpl_npz + image_root [+ box_padding]               -> SPIN-format rows on their own (3DPW, H36M, ...).
box_padding: the factor the npz's `scale` holds over the person box (SPIN's files: 1.2).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader

from datamodules.collate import collate_samples
from datamodules.dataset import DenseHMRDataset, FaceMapper, default_face_mappers
from datamodules.errors import BadSampleLog, DataError, OnBadSample
from datamodules.readers import DensePoseCocoReader, SampleReader, SpinNpz, SpinNpzReader
from datamodules.transforms import AugmentConfig, PelvisModel
from densehmr.body.assets import Body
from densehmr.fault import EpochDraws, SeededDraws, resume_position

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset's files are (see the module docstring)."""

    name: str
    root: str = "."
    densepose_json: str | None = None
    image_root: str = "images"
    smpl_npz: str | None = None
    ratio: float = 1.0
    box_padding: float = 1.0

    def path(self, relative: str) -> Path:
        return Path(self.root) / relative


def make_reader(spec: DatasetSpec, bad: BadSampleLog) -> SampleReader:
    """The reader for `spec`; load-time problems go to `bad`, how an npz joined to the log."""
    if spec.densepose_json is not None:
        smpl = SpinNpz(spec.path(spec.smpl_npz), bad) if spec.smpl_npz else None
        reader = DensePoseCocoReader(
            spec.path(spec.densepose_json), spec.path(spec.image_root), bad, smpl=smpl, box_padding=spec.box_padding
        )
        report = reader.join_report
        if report is not None:
            unjoined = report.rows_unjoined or report.persons_unjoined or report.image_conflicts
            log.log(logging.WARNING if unjoined else logging.INFO, "%s: %s", spec.name, report.line())
        return reader
    if spec.smpl_npz is not None:
        return SpinNpzReader(spec.path(spec.smpl_npz), spec.path(spec.image_root), bad, spec.box_padding)
    raise ValueError(f"dataset {spec.name!r} names neither densepose_json nor smpl_npz")


class DenseHMRDataModule(pl.LightningDataModule):
    """Train/val/test DataLoaders of person crops (batch contract: datamodules/collate.py).

    train/val/test: lists of dataset entries (mappings or DatasetSpec); test defaults to val.
    root: the folder relative entry roots are under (a dataset config's one path to set).
    body: a Body, a name for `load_body`, or a mapping of `load_body` arguments.
    samples_per_epoch: train samples drawn per epoch (default: all train datasets' sizes summed).
    Several val/test datasets give one DataLoader each (Lightning passes dataloader_idx).
    In skip mode the counts of skipped samples are logged at each epoch's end (it adds a
    `BadSampleReport` callback to its trainer) and are available from `skipped_counts(stage)`.
    """

    def __init__(
        self,
        train: Sequence[Mapping[str, Any] | DatasetSpec] = (),
        val: Sequence[Mapping[str, Any] | DatasetSpec] = (),
        test: Sequence[Mapping[str, Any] | DatasetSpec] | None = None,
        image_size: Sequence[int] = (128, 128),
        batch_size: int = 32,
        num_workers: int = 2,
        augment: Mapping[str, Any] | AugmentConfig | None = None,
        on_bad_sample: OnBadSample = "raise",
        body: Body | str | Mapping[str, Any] = "open",
        samples_per_epoch: int | None = None,
        eval_batch_size: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        root: str = ".",
    ) -> None:
        super().__init__()
        self.specs = {
            "train": [_spec(s, root) for s in train],
            "val": [_spec(s, root) for s in val],
            "test": [_spec(s, root) for s in (test if test is not None else val)],
        }
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augment = augment if isinstance(augment, AugmentConfig) else AugmentConfig.from_dict(augment)
        self.on_bad_sample = on_bad_sample
        self.body_spec = body
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = pin_memory
        self.seed = seed
        self.datasets: dict[str, list[DenseHMRDataset]] = {}
        self.load_skipped: dict[str, Counter[str]] = {}
        self.read_skipped: dict[str, Counter[str]] = {}
        self._body: Body | None = None
        self._shared: tuple[tuple[FaceMapper, FaceMapper], PelvisModel | None] | None = None

    @property
    def body(self) -> Body:
        if self._body is None:
            self._body = _load_body(self.body_spec)
        return self._body

    def setup(self, stage: str | None = None) -> None:
        if self.num_workers > 0:
            # The workers are the parallelism. Set before they fork: a worker that resizes OpenCV's
            # inherited thread pool can deadlock.
            cv2.setNumThreads(1)
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self._build_split(split)
        trainer = self.trainer
        if (
            trainer is not None
            and self.on_bad_sample == "skip"
            and not any(isinstance(c, BadSampleReport) for c in trainer.callbacks)
        ):
            trainer.callbacks.append(BadSampleReport())

    def _build_split(self, split: str) -> list[DenseHMRDataset]:
        if self._shared is None:
            mappers = default_face_mappers(self.body)
            moves = self.augment.enabled and (self.augment.rotation_prob > 0 or self.augment.flip_prob > 0)
            self._shared = (mappers, PelvisModel.from_body(self.body) if moves else None)
        mappers, pelvis = self._shared
        bad = BadSampleLog(self.on_bad_sample)
        datasets = []
        for spec in self.specs[split]:
            reader = make_reader(spec, bad)
            datasets.append(
                DenseHMRDataset(
                    reader,
                    self.body,
                    self.image_size,
                    augment=self.augment if split == "train" else None,
                    on_bad_sample=self.on_bad_sample,
                    face_mappers=mappers,
                    pelvis=pelvis,
                )
            )
            log.info("%s/%s: %d samples from %s", split, spec.name, len(reader), reader.source)
            if len(reader) == 0:
                skipped = f"; {sum(bad.counts.values())} skipped as bad: {dict(bad.counts)}" if bad.counts else ""
                raise DataError.at(reader.source, "annotations", "no person to use", detail=f"{split} split{skipped}")
        self.load_skipped[split] = bad.counts
        if bad.counts:
            log.warning(
                "%s: skipped %d bad annotations at load time: %s",
                split,
                sum(bad.counts.values()),
                dict(bad.counts),
            )
        return datasets

    def train_dataloader(self) -> DataLoader:
        datasets = self._datasets("train")
        if not datasets:
            raise ValueError("the data config has no train datasets")
        ratios = np.array([spec.ratio for spec in self.specs["train"]], dtype=np.float64)
        sizes = np.array([len(d) for d in datasets], dtype=np.float64)
        if (ratios < 0).any() or not (ratios * (sizes > 0)).sum() > 0:
            raise ValueError(f"train ratios {ratios.tolist()} give no samples (dataset sizes {sizes.tolist()})")
        # Each dataset's share of draws is its ratio, spread evenly over its samples.
        per_sample = np.concatenate([np.full(int(n), r / n) if n else [] for r, n in zip(ratios, sizes, strict=True)])
        # Draws and augmentations are a function of (seed, epoch), so a run resumed mid-epoch replays
        # the epoch from the batch it had reached (densehmr.fault).
        num_samples = int(self.samples_per_epoch or sizes.sum())
        world = self.trainer.world_size if self.trainer is not None else 1
        if num_samples < self.batch_size * world:
            sources = ", ".join(d.reader.source for d in datasets)
            raise DataError(f"train split ({sources}): {num_samples} samples per epoch, fewer than one batch of "
                            f"{self.batch_size * world}, so no step would train (incomplete batches are dropped); "
                            "lower method.batch_size or raise data.samples_per_epoch", field="samples_per_epoch")
        sampler = EpochDraws(torch.from_numpy(per_sample / per_sample.sum()), num_samples, seed=self.seed)
        epoch, batches_done = resume_position(self.trainer)
        sampler.start(epoch, batches_done * self.batch_size * world)
        dataset = SeededDraws(ConcatDataset(datasets))
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("test")

    def _eval_loaders(self, split: str) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(d, self.eval_batch_size, shuffle=False) for d in self._datasets(split)]
        return loaders[0] if len(loaders) == 1 else loaders

    def _datasets(self, split: str) -> list[DenseHMRDataset]:
        if split not in self.datasets:
            self.datasets[split] = self._build_split(split)
        return self.datasets[split]

    def _loader(self, dataset, batch_size: int, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # Worker seeds from their own generator, not the global one a resumed run has restored.
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Takes the skip counts out of the batch and keeps them per stage."""
        skipped = batch.pop("skipped", None)
        if skipped:
            trainer = self.trainer
            stage = str(trainer.state.stage.value) if trainer is not None and trainer.state.stage else "none"
            self.read_skipped.setdefault(stage, Counter()).update(skipped)
        return batch

    def skipped_counts(self, stage: str, reset: bool = False) -> Counter[str]:
        """Samples skipped at read time in `stage` ('train', 'validate', 'test', ...), per reason."""
        counts = self.read_skipped.get(stage, Counter())
        if reset:
            self.read_skipped[stage] = Counter()
        return Counter(counts)


class BadSampleReport(pl.Callback):
    """Logs, at each epoch's end, how many samples were skipped and why (skip mode)."""

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, DenseHMRDataModule):
            return
        counts = datamodule.skipped_counts(stage, reset=True)
        split = {"train": "train", "validate": "val", "test": "test"}[stage]
        total = sum(counts.values())
        loaded = datamodule.load_skipped.get(split, Counter())
        if total or loaded:
            log.warning(
                "epoch %d %s: skipped %d bad samples at read time %s (and %d at load time %s)",
                trainer.current_epoch,
                stage,
                total,
                dict(counts),
                sum(loaded.values()),
                dict(loaded),
            )
        pl_module.log(f"data/skipped_{split}", float(total), rank_zero_only=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "test")


def _spec(entry: Mapping[str, Any] | DatasetSpec, root: str = ".") -> DatasetSpec:
    spec = entry if isinstance(entry, DatasetSpec) else DatasetSpec(**dict(entry))
    return replace(spec, root=str(Path(root) / spec.root))


def _load_body(spec: Body | str | Mapping[str, Any]) -> Body:
    if isinstance(spec, Body):
        return spec
    from densehmr.body import load_body

    if isinstance(spec, str):
        return load_body(spec)
    options = dict(spec)
    return load_body(options.pop("name", "open"), **options)
