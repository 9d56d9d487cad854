"""The run's loggers, as `configs/logger/*.yaml` name them by `_target_`.

A logger target is called with `save_dir` (the run folder) and `run_config` (the run's resolved config, a
dict) besides its own config keys (`runs.build_logger`); `logger=none` configures none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl

from densehmr.run_log import ResumableCSVLogger


def csv_logger(save_dir: str, run_config: Mapping) -> ResumableCSVLogger:
    """`metrics.csv` in the run folder, continued when the run resumes (`resume` set)."""
    return ResumableCSVLogger(save_dir, resume=bool(run_config.get("resume")))


def wandb_logger(
    save_dir: str, run_config: Mapping, project: str, entity: str | None, tags: Sequence[str], id: str | None
) -> pl.loggers.WandbLogger:
    """W&B, online only with credentials (WANDB_API_KEY or `wandb login`; WANDB_MODE decides if set), named
    `<runs subfolder>-<run folder>` (e.g. `meshpose-20260101-120000`), with the run's config. With `id` (the
    run's recorded W&B id) a resumed run continues the same history (W&B drops the steps it already has)."""
    # Offline unless credentials exist: a run must never prompt or block on the network.
    have_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists()
    mode = os.environ.get("WANDB_MODE") or ("online" if have_key else "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    folder = Path(save_dir)
    return pl.loggers.WandbLogger(
        project=project, entity=entity, save_dir=str(folder), name=f"{folder.parent.name}-{folder.name}",
        tags=list(tags), offline=mode != "online", config=dict(run_config), id=id, resume="allow" if id else None,
    )
