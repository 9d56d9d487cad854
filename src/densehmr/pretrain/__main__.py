"""`python -m densehmr.pretrain [overrides]` (make pretrain): pretrain a backbone, then ship it with its card.

Re-running continues an interrupted run from `<run_dir>/checkpoints/last.ckpt` under the config it started with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from densehmr.pretrain.card import WallClock, export_backbone
from densehmr.pretrain.module import BackbonePretraining
from densehmr.runs import build_logger, build_trainer
from densehmr.train import CONFIG_DIR, check_config_groups, fail_clearly


def pretrain(cfg: DictConfig) -> Path:
    """Fit (or continue) the pretraining run in cfg.run_dir; returns the shipped weights file."""
    run_dir = Path(cfg.run_dir)
    saved, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and saved.is_file():
        print(f"continuing {run_dir} from {last}", file=sys.stderr)
        cfg = OmegaConf.load(saved)
        ckpt_path = str(last)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        ckpt_path = None
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(
        cfg.data, image_size=list(cfg.image_size), batch_size=cfg.batch_size,
        body=OmegaConf.to_container(cfg.body, resolve=True), _recursive_=False, _convert_="all",
    )
    model = BackbonePretraining(
        backbone=OmegaConf.to_container(cfg.backbone, resolve=True),
        body=OmegaConf.to_container(cfg.body, resolve=True),
        loss_weights=OmegaConf.to_container(cfg.loss_weights, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        neck_channels=cfg.neck_channels,
    )
    clock = WallClock()
    trainer = build_trainer(cfg, run_dir, build_logger(cfg, run_dir))
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.global_step < cfg.trainer.max_steps:
        raise RuntimeError(
            f"pretraining stopped at step {trainer.global_step} of {cfg.trainer.max_steps}: nothing shipped; "
            "re-run to continue"
        )
    if not model.last_metrics or model.last_metrics.get("step") != trainer.global_step:
        trainer.validate(model, datamodule=datamodule)
    path = export_backbone(model, cfg, Path(cfg.out_dir), clock.seconds, int(trainer.global_step))
    print(f"backbone: {path}")
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pretrain")
def main(cfg: DictConfig) -> None:
    fail_clearly(pretrain, cfg)


if __name__ == "__main__":
    check_config_groups(sys.argv[1:])
    main()
