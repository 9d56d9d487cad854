"""Each method's paper experiment trained for a few steps through `densehmr.train`, with mixed
precision and DDP on one device; steps/s and peak memory measured by a callback."""

from __future__ import annotations

import gc
import json
import math
import resource
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from densehmr.gpu_check.settings import METHOD_TIME_LIMIT, CheckSettings
from densehmr.runs import compose_train

TIMING_FILE = "gpu_check_timing.json"


class StepTimer(pl.Callback):
    """Wall time of every training step (synchronized on CUDA), the last loss and peak memory, written
    to `path` as JSON when training ends. steps/s leaves out the first `skip` steps."""

    def __init__(self, path: str, skip: int = 10) -> None:
        self.path, self.skip = Path(path), int(skip)
        self.ends: list[float] = []
        self.loss = math.nan
        self.start = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._sync(pl_module)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.ends.append(time.perf_counter())
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.loss = float(loss.detach())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        skip = min(self.skip, max(len(self.ends) - 2, 0))
        timed = self.ends[skip:]
        rate = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else math.nan
        if pl_module.device.type == "cuda":
            peak_mb, memory = torch.cuda.max_memory_allocated(pl_module.device) / 2**20, "CUDA peak allocated"
        else:  # Linux reports kB: the whole process's peak, not this run's alone
            peak_mb, memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"
        self.path.write_text(json.dumps({
            "steps": len(self.ends), "timed_steps": len(timed), "steps_per_s": rate, "final_loss": self.loss,
            "peak_memory_mb": peak_mb, "memory": memory, "seconds": self.ends[-1] - self.start if self.ends else 0.0,
            "strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
            "precision": str(trainer.precision),
        }))


@dataclass(frozen=True)
class TrainResult:
    """One method's short training: status ok | failed | short (fewer steps than asked)."""

    method: str
    status: str
    steps: int = 0
    steps_per_s: float = math.nan
    peak_memory_mb: float = math.nan
    memory: str = ""
    final_loss: float = math.nan
    seconds: float = math.nan
    batch_size: int = 0
    image_size: tuple[int, int] = (0, 0)
    backbone: str = ""
    strategy: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def train_overrides(method: str, settings: CheckSettings, data: Path, run_dir: Path, batch_size: int) -> list[str]:
    """Hydra overrides of the check's run of `method`: its paper experiment on the check's data, one
    epoch of exactly `settings.steps` steps (then one validation), DDP on one device, mixed precision."""
    return [
        f"method={method}", f"experiment=paper_{method}", *settings.overrides, "logger=none",
        f"data.train.0.root={data / 'train'}", f"data.val.0.root={data / 'val'}",
        f"data.num_workers={settings.num_workers}", f"data.samples_per_epoch={batch_size * settings.steps}",
        "trainer.devices=1", "++trainer.strategy=ddp", f"trainer.precision={settings.precision}",
        "trainer.max_epochs=1", f"++trainer.max_steps={settings.steps}", f"++trainer.max_time={METHOD_TIME_LIMIT}",
        "trainer.log_every_n_steps=1", "trainer_extra.checkpoint_every_n_steps=0", "test_after_fit=false",
        f"run_dir={run_dir}",
    ]


def train_method(method: str, settings: CheckSettings, data: Path, out: Path) -> TrainResult:
    """Train `method`'s paper experiment for settings.steps steps in this process; never raises."""
    from densehmr.train import train

    run_dir = out / "runs" / method
    try:
        base = compose_train([f"method={method}", f"experiment=paper_{method}", *settings.overrides])
        batch = int(base.method.batch_size)
        cfg = compose_train(train_overrides(method, settings, data, run_dir, batch))
        timer = {"_target_": f"{StepTimer.__module__}.StepTimer", "path": str(run_dir / TIMING_FILE),
                 "skip": settings.timing_skip}
        cfg.trainer_extra.callbacks = [timer]
        described = {"batch_size": batch, "image_size": tuple(int(v) for v in cfg.image_size),
                     "backbone": str(cfg.backbone.name)}
        with warnings.catch_warnings():
            # One process holds every sample: there is nothing to synchronize across devices.
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            train(cfg)
        timing = json.loads((run_dir / TIMING_FILE).read_text())
    except Exception as exc:  # a failure is a finding of the check, reported with the others
        lines = traceback.format_exception_only(type(exc), exc)
        return TrainResult(method, "failed", error=lines[-1].strip().splitlines()[0])
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    status = "ok" if timing["steps"] == settings.steps and math.isfinite(timing["final_loss"]) else "short"
    return TrainResult(
        method, status, steps=timing["steps"], steps_per_s=timing["steps_per_s"],
        peak_memory_mb=timing["peak_memory_mb"], memory=timing["memory"], final_loss=timing["final_loss"],
        seconds=timing["seconds"], strategy=f"{timing['strategy']} x{timing['world_size']}, {timing['precision']}",
        **described,
    )


def end_distributed() -> None:
    """Lightning leaves the one-device process group up after fit; the next run would reuse it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
