"""Training that survives faults: non-finite losses, interrupted checkpoint writes, killed runs.

- `check_loss`: a NaN/Inf loss stops the run with a message naming the step and the term, or (policy
  "skip", `trainer_extra.nonfinite=skip`) skips the batch; `NonFinitePolicy` hands the policy to the method.
- `AtomicCheckpointIO`: a checkpoint is sealed with a digest of its contents, written to a temporary file,
  synced, then renamed over the old one, so a kill at any moment leaves either the previous or the new
  checkpoint, never half of one; loading verifies it (densehmr.checkpoints).
- Exact resumption: `EpochDraws` draws an epoch's training samples (and a seed for each one's
  augmentation) as a pure function of (seed, epoch), so a resumed epoch replays the same order and
  starts after the batches already trained on (`TrainPosition`); `SeededDraws` applies each draw's
  seed; `RandomState` puts the process's random generators back where they were at the checkpoint
  (dropout and other in-step randomness); `PinnedThreads` computes with the thread count the run
  recorded, because CPU kernels (oneDNN convolutions, ATen reductions) split their sums by thread and a
  step under another count differs in the last bits, which training then amplifies.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loops.fit_loop import _FitLoop
from pytorch_lightning.loops.loop import _Loop
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from densehmr.checkpoints import load_checkpoint, seal

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("raise", "skip")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the message (one line) names the step and the terms."""


def nonfinite_terms(terms: Mapping[str, Tensor]) -> dict[str, float]:
    """The terms (name -> value) that are NaN or +-Inf."""
    bad = {}
    for name, value in terms.items():
        v = value.detach().float()
        if not bool(torch.isfinite(v).all()):
            bad[name] = float(v.sum())
    return bad


def check_loss(module: pl.LightningModule, total: Tensor, terms: Mapping[str, Tensor], policy: str) -> bool:
    """Whether the training step may use `total` (the weighted sum of `terms`).

    A non-finite total raises NonFiniteLossError (policy "raise") or returns False (policy "skip", the
    batch is then skipped). Under DDP the ranks decide together, so they all skip the same step.
    """
    finite = bool(torch.isfinite(total.detach()).all())
    trainer = module._trainer
    if trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return True
    bad = nonfinite_terms(terms) or {"total": float(total.detach().float().sum())}
    where = f"step {module.global_step} (epoch {module.current_epoch})"
    named = ", ".join(f"{name}={value}" for name, value in bad.items())
    if policy == "raise":
        raise NonFiniteLossError(
            f"non-finite loss at {where}: {named}; trainer_extra.nonfinite=skip skips such batches"
        )
    log.warning("skipping the batch at %s: non-finite loss %s", where, named)
    if trainer is not None:
        module.log("train/skipped_nonfinite", 1.0, on_step=False, on_epoch=True, reduce_fx="sum", batch_size=1)
    return False


class NonFinitePolicy(pl.Callback):
    """Gives the method the configured policy for non-finite losses ("raise" or "skip")."""

    def __init__(self, policy: str = "raise") -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"trainer_extra.nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy = policy

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.nonfinite_policy = self.policy


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints sealed with a digest of their contents (densehmr.checkpoints), written to a temporary
    file in the same folder, synced, then renamed into place; verified when Lightning loads them."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        checkpoint = seal(checkpoint)
        if "://" in str(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            # O_EXCL: never write through a stale link; 0o666 lets the umask decide, as for any file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RandomState(pl.Callback):
    """Saves the process's random generators (torch CPU/CUDA, numpy, python) in each checkpoint and
    restores them on resume, so in-step randomness (dropout, noise) continues as if never interrupted."""

    def state_dict(self) -> dict[str, Any]:
        # Tensors, ints and tuples only: checkpoints load with torch.load(weights_only=True).
        kind, key, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, key, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


class LastMetrics(pl.Callback):
    """Keeps the method's latest evaluation metrics (`last_metrics`, what metrics.json reports) in each
    checkpoint, so a resumed run reports a validation its killed process ran."""

    def __init__(self) -> None:
        self._module: pl.LightningModule | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": {k: float(v) for k, v in getattr(self._module, "last_metrics", {}).items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._module is not None and state_dict.get("metrics"):
            self._module.last_metrics = dict(state_dict["metrics"])


class PinnedThreads(pl.Callback):
    """Sets torch's intra-op thread count to `threads` when the trainer sets up, in every process,
    after anything imported while the run was built (a callback's module, a library) may have changed it."""

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.threads)


class Draw(int):
    """A dataset index (an int to every consumer) carrying the seed of its sample's augmentation."""

    seed: int

    def __new__(cls, index: int, seed: int) -> Draw:
        draw = super().__new__(cls, index)
        draw.seed = seed
        return draw

    def __reduce__(self):
        return Draw, (int(self), self.seed)


class EpochDraws(Sampler[int]):
    """`num_samples` weighted draws with replacement per epoch, a pure function of (seed, epoch).

    Each draw is a `Draw`: the index and a seed for that sample's augmentation. Lightning calls
    `set_epoch` before each epoch; `start(epoch, skip)` sets the epoch of the next iteration and how many
    of its draws were trained on before a resume: that iteration yields the epoch rotated to begin after
    them (its full length, so that Lightning's distributed wrapper, which deals out draw i to rank
    i % world_size, still finds every position; the trainer stops at the epoch's batch count).
    """

    def __init__(self, weights: Sequence[float] | Tensor, num_samples: int, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = int(epoch), 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self._skip = int(epoch), int(skip)

    def draws(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(num_samples,) int64 indices and (num_samples,) int64 augmentation seeds of `epoch`."""
        key = np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(key))
        indices = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=generator)
        return indices, seeds

    def __iter__(self):
        indices, seeds = self.draws(self.epoch)
        skip, self._skip = self._skip % max(self.num_samples, 1), 0
        order = torch.cat([torch.arange(skip, self.num_samples), torch.arange(skip)])
        for index, seed in zip(indices[order].tolist(), seeds[order].tolist(), strict=True):
            yield Draw(index, seed)

    def __len__(self) -> int:
        return self.num_samples


class SeededDraws(Dataset):
    """`dataset[draw]` with torch's generator seeded by `draw.seed` for the call (restored after).

    The datasets reseed their augmentation streams whenever torch's seed changes, so each draw gets
    its own augmentation, the same in an uninterrupted and a resumed run, whatever the worker count.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: int):
        seed = getattr(draw, "seed", None)
        if seed is None:
            return self.dataset[draw]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[int(draw)]


class TrainPosition(pl.Callback):
    """Where the next training batch comes from: (epoch, batches of it already trained), kept in every
    checkpoint. Restored with the callbacks, before anything asks for the train DataLoader (a schedule
    that counts the training steps asks for it before Lightning restores its loops: Lightning #20550)."""

    def __init__(self) -> None:
        self.epoch, self.done = 0, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch, self.done = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.done += 1
        if self.done >= trainer.num_training_batches:
            self.epoch, self.done = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.epoch, self.done = int(state_dict["epoch"]), int(state_dict["done"])


class FinishedEpochFitLoop(_FitLoop):
    """Lightning's fit loop, except that a checkpoint written at the end of an epoch resumes at the next
    epoch's first batch under a step budget (`max_steps`) too.

    Lightning marks every step-budgeted restore as restarting, even from a finished epoch; it then trains
    one batch more in the finished epoch (drawn from the next one) and shifts every later epoch by it.
    Restarting only from an unfinished epoch is what it already does for epoch budgets.
    """

    @property
    def restarting(self) -> bool:
        return self._restarting

    @restarting.setter
    def restarting(self, restarting: bool) -> None:
        progress = self.epoch_progress.current
        unfinished = progress.ready != progress.processed or progress.started != progress.processed
        _Loop.restarting.fset(self, restarting and unfinished)


def resume_finished_epochs(trainer: pl.Trainer) -> None:
    """Give `trainer` a FinishedEpochFitLoop (before fitting), keeping its epoch loop and limits."""
    old = trainer.fit_loop
    loop = FinishedEpochFitLoop(trainer, min_epochs=old.min_epochs, max_epochs=old.max_epochs)
    loop.epoch_loop = old.epoch_loop
    trainer.fit_loop = loop


class StepCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every_n_train_steps` training steps, written when a step is over.

    A step's work may go on after its training batch (a validation, the epoch's end). Lightning resumes a
    checkpoint written at the batch's end as if that work were done: it skips the validation (and the
    end-of-epoch checkpoint). So a checkpoint falling due on such a step waits for the next step that ends
    with its batch; the epoch's own checkpoint covers its end. Nothing is written when training ends:
    Lightning's ModelCheckpoint would write `last.ckpt` then if it wrote none in this process, so a resumed
    run would overwrite the end-of-epoch checkpoint with a copy labelled one epoch later.
    """

    def __init__(self, every_n_train_steps: int, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0, **kwargs)
        self._due = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self._every_n_train_steps == 0:
            self._due = True
        if self._due and not _step_goes_on(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._due = False  # before writing: the checkpoint holds this callback's state too
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "due": self._due}  # a checkpoint waiting for its step survives

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._due = bool(state_dict.get("due", False))


def _step_goes_on(trainer: pl.Trainer) -> bool:
    """Whether the step whose batch just ended still has work: a validation, or the end of the epoch
    (its last batch, the step budget spent, a stop requested)."""
    loop = trainer.fit_loop.epoch_loop
    if loop._is_training_done or trainer.should_stop:
        return True
    return loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


def resume_position(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(epoch, batches already trained in it) where the trainer's next training iteration starts:
    its TrainPosition callback's, else (0, 0)."""
    for callback in getattr(trainer, "callbacks", None) or ():
        if isinstance(callback, TrainPosition):
            return callback.epoch, callback.done
    return 0, 0
