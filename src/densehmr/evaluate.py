"""Evaluate a checkpoint: `python -m densehmr.evaluate method=<m> ckpt_path=<path> [overrides]`.

A checkpoint inside a run folder (`<run>/checkpoints/*.ckpt`) is evaluated under that run's config.yaml
(precision, method options, data, thread count), with this command's overrides applied on top, so that it
reproduces the test metrics of the run's metrics.json. A loose checkpoint is evaluated under this
command's config. The checkpoint is verified first (densehmr.checkpoints). Writes
`<run>/eval-<time>/metrics.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from densehmr.checkpoints import load_checkpoint
from densehmr.fault import PinnedThreads
from densehmr.runs import (
    ConfigError,
    build_datamodule,
    build_method,
    compose_train,
    intra_op_threads,
    saved_run_config,
    write_metrics,
)
from densehmr.train import CONFIG_DIR, check_config_groups, fail_clearly

# Keys that belong to this command, never taken from the run.
_OWN_KEYS = ("ckpt_path", "run_id", "run_dir", "resume")


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Test metrics of cfg.ckpt_path; overrides: the command line's (`key=value`), which win over the run's
    config even where they equal today's defaults."""
    if not cfg.ckpt_path:
        raise ConfigError("evaluate needs ckpt_path=<path to a .ckpt>")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint not found: {ckpt}")
    cfg = evaluation_config(cfg, ckpt, override_keys(overrides))
    state = load_checkpoint(ckpt)["state_dict"]
    model = build_method(cfg)
    model.load_state_dict(state)
    datamodule = build_datamodule(cfg)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                         logger=False, enable_checkpointing=False, callbacks=[PinnedThreads(intra_op_threads(cfg))])
    trainer.test(model, datamodule=datamodule)
    metrics = dict(getattr(model, "last_metrics", {}))
    out_dir = ckpt.parent.parent / f"eval-{cfg.run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"metrics: {write_metrics(out_dir, model, metrics)}")
    return metrics


def override_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys a command line sets: `++meshpose.decode_upsample=4` -> `meshpose.decode_upsample`."""
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


def evaluation_config(cfg: DictConfig, ckpt: Path, given_keys: Collection[str] = ()) -> DictConfig:
    """The config to evaluate `ckpt` under: its run's config.yaml, where the checkpoint sits in a run's
    `checkpoints/` folder, with every setting this command changed from configs/train.yaml's defaults and
    every key in given_keys (named on the command line, even at its default value) set on top; else `cfg`
    itself. A default that changed since the run was trained does not act without being named: re-evaluating
    a run reproduces its numbers."""
    saved = ckpt.parent.parent / "config.yaml"
    if ckpt.parent.name != "checkpoints" or not saved.is_file():
        return cfg
    default_cfg = compose_train([f"method={cfg.method.name}"])
    run = saved_run_config(saved, default_cfg)
    if run.method.name != cfg.method.name:
        raise ConfigError(f"{ckpt} is a {run.method.name} checkpoint (its run's config.yaml), not {cfg.method.name}")
    defaults = _flat(default_cfg)
    given = _flat(cfg)
    for key in set(defaults) | set(given):
        if key.split(".")[0] in _OWN_KEYS:
            continue
        if key not in given_keys and defaults.get(key, _ABSENT) == given.get(key, _ABSENT):
            continue
        if key in given:
            OmegaConf.update(run, key, given[key], force_add=True)
        else:
            _delete(run, key)
    for key in _OWN_KEYS:
        OmegaConf.update(run, key, cfg.get(key), force_add=True)
    return run


_ABSENT = object()


def _flat(cfg: DictConfig) -> dict[str, Any]:
    """Dotted key -> resolved value of every leaf (lists are leaves)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _delete(cfg: DictConfig, key: str) -> None:
    *parents, leaf = key.split(".")
    node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
    if isinstance(node, DictConfig) and leaf in node:
        del node[leaf]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    fail_clearly(lambda c: evaluate(c, overrides), cfg)


if __name__ == "__main__":
    check_config_groups(sys.argv[1:])
    main()
