"""A run's CSV log (`metrics.csv`) that keeps its history through kills and resumes.

Lightning's CSVLogger deletes `metrics.csv` when it starts in a folder that has files, and holds rows in
memory for up to 100 steps before writing them. Here a resumed run appends to the file it finds, after
dropping the rows of the steps it will train again (the steps after its checkpoint, logged before the
kill), and `KeptRows` writes rows before each training step and epoch, so a kill loses only rows of a step
that the resumed run trains again.

Rows carry Lightning's logging step: the rows of training step g (its losses, a validation run after it,
an epoch ending with it) are logged at step g - 1, so a run resuming after step g keeps the rows logged
below step g.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from densehmr.files import atomic_write_bytes


class KeptRowsWriter(ExperimentWriter):
    """`metrics.csv` writer that continues an existing file (`keep`) or starts a new one."""

    def __init__(self, log_dir: str, keep: bool) -> None:
        self.keep = keep
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if not self.keep:
            path.unlink()  # a new run in a used folder starts a new log
            return
        with open(path, newline="") as fh:
            self.metrics_keys = sorted(csv.DictReader(fh).fieldnames or [])

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at `step` or later from the file; returns how many remain."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = [row for row in reader if int(float(row["step"])) < step]
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(path, out.getvalue().encode())
        return len(rows)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing `<save_dir>/metrics.csv`; with `resume`, continuing the file already there."""

    def __init__(self, save_dir: str | os.PathLike, resume: bool = False) -> None:
        super().__init__(save_dir=save_dir, name="", version="")
        self.resume = resume

    @property
    @rank_zero_experiment
    def experiment(self) -> KeptRowsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeptRowsWriter(self.log_dir, keep=self.resume)
        return self._experiment


class KeptRows(pl.Callback):
    """Writes the loggers' rows before each training epoch and step; in a resumed fit, first drops the
    CSV rows of the steps about to be trained again."""

    def __init__(self) -> None:
        self._started = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _write_rows(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if not self._started:
            self._started = True
            first = trainer.fit_loop.epoch_loop._batches_that_stepped  # the logging step of the next rows
            for logger in trainer.loggers:
                if isinstance(logger, ResumableCSVLogger) and logger.resume and trainer.is_global_zero:
                    logger.experiment.drop_rows_from(first)
        _write_rows(trainer)


def _write_rows(trainer: pl.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()
