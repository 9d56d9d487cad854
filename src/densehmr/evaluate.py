"""Evaluate a checkpoint: `python -m densehmr.evaluate method=<m> ckpt_path=<path> [data=...]`.

Writes `metrics.json` next to the checkpoint's run (`<run>/eval-<time>/metrics.json`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from densehmr.runs import ConfigError, build_datamodule, build_method, write_metrics
from densehmr.train import CONFIG_DIR, check_config_groups, fail_clearly


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if not cfg.ckpt_path:
        raise ConfigError("evaluate needs ckpt_path=<path to a .ckpt>")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint not found: {ckpt}")
    model = build_method(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    datamodule = build_datamodule(cfg)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False, enable_checkpointing=False)
    trainer.test(model, datamodule=datamodule)
    metrics = dict(getattr(model, "last_metrics", {}))
    out_dir = ckpt.parent.parent / f"eval-{cfg.run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"metrics: {write_metrics(out_dir, model, metrics)}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    fail_clearly(evaluate, cfg)


if __name__ == "__main__":
    check_config_groups(sys.argv[1:])
    main()
