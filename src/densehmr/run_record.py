"""What a run's metrics.json says about its training: steps trained and asked for, wall time, why it stopped.

Keys (beside the metrics; numbers as floats, like the metrics): `run/steps` (optimizer steps trained),
`run/max_steps` (the steps the trainer was asked for: max_steps, or max_epochs x batches per epoch; left out
when unbounded), `run/wall_s` (seconds
spent fitting, summed over the processes of a resumed run up to its checkpoint) and `run/stopped_by`:
`max_steps`, `max_epochs`, `max_time` (the wall-clock guard: fewer steps than asked), `stopped` (a callback
asked to stop), `nonfinite` (a NaN/Inf loss ended it) or `interrupted` (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.utilities.exceptions import SIGTERMException

from densehmr.fault import NonFiniteLossError

log = logging.getLogger(__name__)

STOPPED_BY = "run/stopped_by"
TRUNCATED = "max_time"  # the stop reason of a run that trained fewer steps than asked
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: an unfinished run, resumable


class RunRecord(pl.Callback):
    """Times the fit (the seconds are kept in checkpoints) and, when the fit ends in a non-finite loss or
    an interruption, writes metrics.json with the record alone via `write(record)`."""

    def __init__(self, write) -> None:
        self.write = write
        self.seconds_before = 0.0
        self._start: float | None = None

    @property
    def seconds(self) -> float:
        return self.seconds_before + (time.monotonic() - self._start if self._start is not None else 0.0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds_before, self._start = self.seconds, None

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds_before = float(state_dict.get("seconds", 0.0))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, NonFiniteLossError):
            reason = "nonfinite"
        elif isinstance(exception, KeyboardInterrupt | SIGTERMException):
            reason = INTERRUPTED
        else:
            return
        if trainer.is_global_zero:
            self.write(self.record(trainer, reason))

    def record(self, trainer: pl.Trainer, reason: str | None = None) -> dict[str, Any]:
        """The run/ keys of `trainer`'s fit; the stop reason is read from the trainer unless given."""
        asked = trainer.estimated_stepping_batches
        record = {"run/steps": float(trainer.global_step), "run/max_steps": float(asked),
                  "run/wall_s": round(self.seconds, 1), STOPPED_BY: reason or stop_reason(trainer)}
        if not math.isfinite(asked):
            del record["run/max_steps"]
        return record


def stop_reason(trainer: pl.Trainer) -> str:
    """Why a fit that returned normally stopped."""
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return "max_steps"
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is not None and remaining <= 0:
        return TRUNCATED
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "stopped"


def report_truncation(record: dict[str, Any], max_time: Any, run_dir: Path) -> None:
    """One log line (the run's last) when the wall-clock guard ended training before its step budget. A run
    without a step budget (`run/max_steps` left out) that stops at the guard ran as asked: no line."""
    if record.get(STOPPED_BY) == TRUNCATED and "run/max_steps" in record:
        log.warning("TRUNCATED: training stopped at the wall-clock limit trainer.max_time=%s after %d of %d steps "
                    "(%.0f s); %s/metrics.json is from a shorter run than asked", max_time, record["run/steps"],
                    record["run/max_steps"], record["run/wall_s"], run_dir)
