"""Building a run from its config: data, method, logger, trainer; run folders and metrics.json."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from densehmr import config_resolvers
from densehmr.fault import (
    AtomicCheckpointIO,
    LastMetrics,
    NonFinitePolicy,
    PinnedThreads,
    RandomState,
    StepCheckpoint,
    TrainPosition,
    resume_finished_epochs,
)
from densehmr.files import atomic_write_bytes
from densehmr.host_memory import RetainFreedMemory
from densehmr.memory_format import ChannelsLast
from densehmr.run_log import KeptRows

config_resolvers.register()


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line for the user."""


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The DataModule `cfg.data` configures, at the run's crop size, batch size and body."""
    return instantiate(
        cfg.data,
        image_size=list(cfg.image_size),
        batch_size=cfg.method.batch_size,
        body=OmegaConf.to_container(cfg.body, resolve=True),
        _recursive_=False,
        _convert_="all",
    )


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """configs/train.yaml composed with `overrides`, as `python -m densehmr.train <overrides>` would; also
    from inside a command already running under @hydra.main."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from densehmr.train import CONFIG_DIR  # read at call time: train imports this module

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def saved_run_config(path: Path, defaults: DictConfig | None = None) -> DictConfig:
    """A run's config.yaml, with the method options added since the run was made set to today's defaults
    (each option's default is the behaviour before it existed), so that older runs still build, evaluate
    and resume; a note on stderr names those options. `defaults`: configs/train.yaml for the run's method,
    when the caller has composed it already."""
    run = OmegaConf.load(path)
    name = run.method.name
    if defaults is None or defaults.method.name != name:
        defaults = compose_train([f"method={name}"])
    current = defaults.get(name)
    saved = run.get(name) or OmegaConf.create({})
    missing = [k for k in (current or {}) if k not in saved]
    if missing:
        print(f"note: {path} predates {', '.join(f'{name}.{k}' for k in missing)}: today's default used",
              file=sys.stderr)
        run[name] = OmegaConf.merge(current, saved)
    return run


def build_method(cfg: DictConfig) -> pl.LightningModule:
    """The method `cfg.method.module` names (`_target_`, `loss_weights`), given the run's shared settings
    (body, backbone, image_size, optimizer, scheduler, log_images_every_n_steps, densepose_kappa,
    densepose_protocol) and its own
    options, the `<method.name>:` node (none when the method has no option)."""
    name = cfg.method.name
    stray = sorted(set(cfg.method.module) - {"_target_", "loss_weights"})
    if stray:
        raise ConfigError(f"method.module.{stray[0]}: a {name} option is set as {name}.{stray[0]}")
    return instantiate(
        cfg.method.module,
        body=_container(cfg.body),
        backbone=_container(cfg.backbone),
        image_size=list(cfg.image_size),
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.get("scheduler")),
        log_images_every_n_steps=cfg.log_images_every_n_steps,
        densepose_kappa=cfg.densepose_kappa,
        densepose_protocol=cfg.densepose_protocol,
        **(_container(cfg.get(name)) or {}),
        _recursive_=False,
        _convert_="all",
    )


def _container(node) -> dict | None:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_logger(cfg: DictConfig, run_dir: Path):
    """The logger `cfg.logger` names by `_target_` (densehmr.loggers: called with the run folder and the run's
    config), or False for `logger=none`."""
    if not cfg.get("logger"):
        return False
    return instantiate(
        cfg.logger, save_dir=str(run_dir), run_config=OmegaConf.to_container(cfg, resolve=True),
        _recursive_=False, _convert_="all",  # the run's config holds `_target_`s of its own: kept as written
    )


def intra_op_threads(cfg: DictConfig) -> int:
    """torch's intra-op thread count for the run: `trainer_extra.threads`, else torch's default on this
    machine shared among the run's CPU processes (DDP on CPU runs one per device)."""
    threads = (cfg.get("trainer_extra") or {}).get("threads")
    if threads:
        return int(threads)
    devices = cfg.trainer.get("devices", 1)
    local = devices if cfg.trainer.get("accelerator") == "cpu" and isinstance(devices, int) and devices > 1 else 1
    return max(1, torch.get_num_threads() // local)


def build_trainer(cfg: DictConfig, run_dir: Path, logger) -> pl.Trainer:
    """The configured Trainer with the run's checkpoints (atomic; `last.ckpt` also every
    `trainer_extra.checkpoint_every_n_steps` steps, for resuming mid-epoch) and fault handling."""
    extra = cfg.get("trainer_extra") or {}
    folder = str(run_dir / "checkpoints")
    # Both write last.ckpt (no last-v1.ckpt beside it): at the end of every training epoch (after its
    # validation, if it has one, and whether it has one or not: the last epoch's weights are always kept), and
    # every N steps.
    callbacks = [ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=1, save_on_train_epoch_end=True,
                                 enable_version_counter=False)]
    every = int(extra.get("checkpoint_every_n_steps") or 0)
    if every > 0:
        callbacks.append(StepCheckpoint(every, dirpath=folder, enable_version_counter=False))
    callbacks += [NonFinitePolicy(extra.get("nonfinite", "raise")), RandomState(), TrainPosition(),
                  PinnedThreads(intra_op_threads(cfg)), KeptRows(), LastMetrics()]
    if extra.get("channels_last", False):
        callbacks.append(ChannelsLast())
    if extra.get("retain_freed_memory", False):
        callbacks.append(RetainFreedMemory())
    callbacks += [instantiate(c) for c in extra.get("callbacks") or []]
    # Our train sampler replays an interrupted epoch (densehmr.fault), which this warning cannot know.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    trainer = instantiate(
        cfg.trainer, default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], enable_progress_bar=True,
    )
    resume_finished_epochs(trainer)
    return trainer


def point_latest(run_dir: Path) -> None:
    """Make `<method>/latest` a relative symlink to this run (replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def write_metrics(run_dir: Path, model: pl.LightningModule, metrics: dict[str, float],
                  record: dict | None = None) -> Path:
    """metrics.json: the test metrics under their keys (docs/architecture.md, "Metric keys"), validation ones
    under `val/`, protocols, and the training's record (`run/` keys: densehmr.run_record) when given."""
    payload = {k: float(v) for k, v in sorted(metrics.items())}
    metrics_modules = model.metrics() if hasattr(model, "metrics") else {}
    if "mesh" in metrics_modules and any(k.startswith("mesh/") for k in payload):
        payload["mesh/protocol"] = metrics_modules["mesh"].protocol
    if "densepose" in metrics_modules and any(k.startswith("densepose/") for k in payload):
        payload["densepose/protocol"] = metrics_modules["densepose"].protocol
    payload.update(record or {})
    path = run_dir / "metrics.json"
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())
    return path
