"""Training that survives faults: non-finite losses, interrupted checkpoint writes, killed runs.

- `check_loss`: a NaN/Inf loss stops the run with a message naming the step and the term, or (policy
  "skip", `trainer_extra.nonfinite=skip`) skips the batch; `NonFinitePolicy` hands the policy to the method.
- `AtomicCheckpointIO`: a checkpoint is written to a temporary file, synced, then renamed over the old one,
  so a kill at any moment leaves either the previous or the new checkpoint, never half of one.
- Exact resumption: `EpochDraws` draws an epoch's training samples (and a seed for each one's
  augmentation) as a pure function of (seed, epoch), so a resumed epoch replays the same order and
  starts after the batches already trained on (`TrainPosition`); `SeededDraws` applies each draw's
  seed; `RandomState` puts the process's random generators back where they were at the checkpoint
  (dropout and other in-step randomness).
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
from torch import Tensor
from torch.utils.data import Dataset, Sampler

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
    """Checkpoints written to a temporary file in the same folder, synced, then renamed into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
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


def resume_position(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(epoch, batches already trained in it) where the trainer's next training iteration starts:
    its TrainPosition callback's, else (0, 0)."""
    for callback in getattr(trainer, "callbacks", None) or ():
        if isinstance(callback, TrainPosition):
            return callback.epoch, callback.done
    return 0, 0
