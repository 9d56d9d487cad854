"""What a checkpoint is, in a few words for pictures and JSON: its method and backbone, the data it
was trained on (synthetic or real), how many steps, and its metrics on its validation split, read from
the run folder it sits in (config.yaml, metrics.json) when there is one."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from densehmr.studies.tables import METRIC_COLUMNS, format_value

# Dataset entries of configs/data/ whose name starts with this are the synthetic benchmark; any
# other (densepose_coco, h36m, 3dpw, ...) is real data.
SYNTHETIC_PREFIX = "synthetic"
TEST_SPLIT_IS_VAL = "val"


@dataclass(frozen=True)
class ModelCard:
    """checkpoint: its path.  training_data: synthetic | real | synthetic + real | unknown.
    datasets: the train entries' names.  steps: optimizer steps (None: not recorded).
    metrics: metric key -> value on `metrics_split` (APs as fractions, errors in mm)."""

    checkpoint: str
    method: str
    backbone: str | None = None
    training_data: str = "unknown"
    datasets: list[str] = field(default_factory=list)
    steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_split: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Three lines saying what the model is, for the demo's picture."""
        what = ", ".join(x for x in (self.backbone, f"{self.steps} steps" if self.steps is not None else None) if x)
        first = f"{self.method} checkpoint {self.checkpoint}" + (f" ({what})" if what else "")
        if self.training_data == "synthetic":
            data = f"trained on synthetic renders only ({', '.join(self.datasets)}): not a model of real photographs"
        elif self.training_data == "unknown":
            data = "training data unknown (no run config.yaml beside the checkpoint)"
        else:
            data = f"trained on {self.training_data} data ({', '.join(self.datasets)})"
        shown = [f"{header} {format_value(self.metrics, key, kind)}"
                 for header, key, kind in METRIC_COLUMNS if key in self.metrics]
        if shown:
            metrics = f"{self.metrics_split} split: " + ", ".join(shown) + " (APs and IoU x100)"
        else:
            metrics = "no validation metrics (no metrics.json beside the checkpoint)"
        return [first, data, metrics]


def training_data(cfg: DictConfig) -> tuple[str, list[str]]:
    """(synthetic | real | synthetic + real, train dataset names) of a run config."""
    names = [str(entry.get("name", "?")) for entry in (cfg.data.get("train") or [])]
    kinds = {"synthetic" if n.startswith(SYNTHETIC_PREFIX) else "real" for n in names}
    kind = " + ".join(k for k in ("synthetic", "real") if k in kinds) or "unknown"
    return kind, names


def validation_metrics(run: Path, cfg: DictConfig | None) -> tuple[dict[str, float], str | None]:
    """The run's metrics on its validation split and that split's name. metrics.json holds the test
    metrics under plain keys and the last validation's under `val/`; with no test split configured the
    test split is the validation split, so the plain keys (the best checkpoint's) are used."""
    path = run / "metrics.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, None
    if not isinstance(stored, dict):
        return {}, None
    prefix = "" if cfg is None or cfg.data.get("test") is None else "val/"
    keys = [key for _, key, _ in METRIC_COLUMNS]
    metrics = {k: float(stored[prefix + k]) for k in keys if isinstance(stored.get(prefix + k), int | float)}
    names = [str(e.get("name", "?")) for e in (cfg.data.get("val") or [])] if cfg is not None else []
    split = f"{TEST_SPLIT_IS_VAL} ({', '.join(names)})" if names else TEST_SPLIT_IS_VAL
    return metrics, split if metrics else None


def checkpoint_steps(ckpt: Path) -> int | None:
    """The optimizer steps a Lightning checkpoint records (None when it records none)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return int(step) if isinstance(step, int) else None


def model_card(ckpt: str | Path, method: str, cfg: DictConfig | None) -> ModelCard:
    """The card of checkpoint `ckpt` of `method`, whose run config is `cfg` (None: a loose checkpoint)."""
    ckpt = Path(ckpt)
    run = ckpt.resolve().parent.parent
    kind, names = training_data(cfg) if cfg is not None else ("unknown", [])
    metrics, split = validation_metrics(run, cfg) if cfg is not None else ({}, None)
    backbone = str(cfg.backbone.name) if cfg is not None and cfg.get("backbone") is not None else None
    return ModelCard(
        checkpoint=str(ckpt), method=method, backbone=backbone, training_data=kind, datasets=names,
        steps=checkpoint_steps(ckpt), metrics=metrics, metrics_split=split,
    )
