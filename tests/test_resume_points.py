"""Resuming from every checkpoint a run writes replays exactly what the uninterrupted run did after it.

A toy method and data module (the project's sampler, trainer, checkpoints and CSV log) train a few short
epochs in this process. Every write of `last.ckpt` is copied aside, with the log as it stood at the end of
the run (rows after the checkpoint included, as after a kill); each copy is then resumed in a new trainer.
What each resumed fit does (training batches with their samples, validations, checkpoint writes, in
order) must equal what the uninterrupted fit did after that checkpoint, and its `metrics.csv` must equal
the uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import DataLoader, Dataset

from densehmr.fault import AtomicCheckpointIO, EpochDraws, SeededDraws, resume_position
from densehmr.run_log import ResumableCSVLogger
from densehmr.runs import build_trainer
from densehmr.train import CONFIG_DIR

BATCH, PER_EPOCH, STEPS = 2, 8, 12  # 4 steps an epoch, 3 epochs
# Each resumed fit writes its checkpoints to a folder of its own, which Lightning remarks on.
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed")


class _SeedEcho(Dataset):
    """Sample i is (i, the draw's augmentation seed mod 1000): what a batch holds says which draws it got."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index), float(torch.initial_seed() % 1000)])


class _Data(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        sampler = EpochDraws(torch.ones(5), PER_EPOCH, seed=1)
        epoch, done = resume_position(self.trainer)
        sampler.start(epoch, done * BATCH)
        return DataLoader(SeededDraws(_SeedEcho()), batch_size=BATCH, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_SeedEcho(), batch_size=BATCH)


class _Recorder(pl.LightningModule):
    """A linear model that appends each event of the fit to `events` (a JSON-lines file)."""

    def __init__(self, events: Path) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.events = events

    def record(self, *event) -> None:
        with open(self.events, "a") as fh:
            fh.write(json.dumps([*event, self.current_epoch, self.global_step]) + "\n")

    def training_step(self, batch, batch_idx):
        self.record("train", batch_idx, batch.flatten().tolist())
        loss = self.linear(batch).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/epoch", float(self.current_epoch))

    def validation_step(self, batch, batch_idx):
        self.record("val", batch_idx)
        self.log("val/sum", batch.sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class _CopyingCheckpointIO(AtomicCheckpointIO):
    """Records each write of last.ckpt as an event and keeps a copy of it."""

    def __init__(self, module: _Recorder, copies: Path) -> None:
        super().__init__()
        self.module, self.copies = module, copies

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        if Path(path).name == "last.ckpt":
            self.module.record("checkpoint")
            self.copies.mkdir(exist_ok=True)
            shutil.copy(path, self.copies / f"{len(list(self.copies.iterdir())):02d}.ckpt")


def _fit(run_dir: Path, overrides: list[str], ckpt: Path | None = None) -> list:
    """Fit in `run_dir` (resuming `ckpt` if given); the events of this fit."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "trainer.max_time=null", "trainer.log_every_n_steps=1",
                                          "+trainer.enable_model_summary=false", "trainer.precision=32-true",
                                          *overrides])
    run_dir.mkdir(parents=True, exist_ok=True)
    module = _Recorder(run_dir / "events.jsonl")
    trainer = build_trainer(cfg, run_dir, ResumableCSVLogger(run_dir, resume=ckpt is not None))
    trainer.strategy.checkpoint_io = _CopyingCheckpointIO(module, run_dir / "copies")
    trainer.fit(module, datamodule=_Data(), ckpt_path=ckpt)
    return [json.loads(line) for line in open(module.events)] if module.events.exists() else []


SETTINGS = {
    # The CPU default's step budget; validation at steps 2 and 4 of every second epoch (6 and 8).
    "step budget, validation mid-epoch and at some epoch ends": [
        f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=1", "+trainer.val_check_interval=2",
        "trainer.check_val_every_n_epoch=2", "trainer_extra.checkpoint_every_n_steps=5"],
    # Step checkpoints falling due on an epoch's last step, which a validation follows.
    "step budget, step checkpoints due at epoch ends": [
        f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=1", "trainer_extra.checkpoint_every_n_steps=4"],
    "epoch budget, validation at every epoch end": [
        "trainer.max_steps=-1", f"trainer.max_epochs={STEPS * BATCH // PER_EPOCH}", "trainer.limit_val_batches=1",
        "trainer_extra.checkpoint_every_n_steps=3"],
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_checkpoint_resumes_to_what_the_uninterrupted_run_did_next(setting, tmp_path):
    overrides = SETTINGS[setting]
    whole = _fit(tmp_path / "whole", overrides)
    assert sum(e[0] == "train" for e in whole) == STEPS
    assert any(e[0] == "val" for e in whole)
    marks = [i for i, event in enumerate(whole) if event[0] == "checkpoint"]
    copies = sorted((tmp_path / "whole" / "copies").iterdir())
    assert len(copies) == len(marks) >= 5
    for mark, copy in zip(marks, copies, strict=True):
        resumed = tmp_path / copy.stem
        resumed.mkdir()
        shutil.copy(tmp_path / "whole" / "metrics.csv", resumed / "metrics.csv")  # rows past the checkpoint too
        got = _fit(resumed, overrides, copy)
        assert got == whole[mark + 1:], f"resumed from the checkpoint written at {whole[mark]}"
        assert (resumed / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
