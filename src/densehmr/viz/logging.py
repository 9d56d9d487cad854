"""Pictures from training: saved as PNG in the run's `figures/` and sent to W&B when it is the logger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image


def log_images(module: pl.LightningModule, images: dict[str, np.ndarray], stage: str) -> list[Path]:
    """images: name -> (H, W, 3) uint8. Returns the PNG paths written (rank zero only)."""
    trainer = module.trainer
    if not images or not trainer.is_global_zero:
        return []
    figures = Path(trainer.default_root_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    step = trainer.global_step
    paths = []
    for name, img in images.items():
        path = figures / f"{stage}_{name}_step{step:06d}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(path)
        paths.append(path)
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.log_image(key=f"{stage}/pictures", images=[str(p) for p in paths],
                             caption=list(images), step=step)
    return paths
