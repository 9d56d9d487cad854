"""The shipped result of a pretraining: the backbone's weights (fp16) and its card."""

from __future__ import annotations

import io
import json
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from densehmr.files import atomic_write_bytes
from densehmr.nn.backbones.shipped import card_path, sha256, weights_path


class WallClock(pl.Callback):
    """Training wall time in seconds, summed over every resumed part of a run (kept in its checkpoints)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.monotonic()

    def _tick(self) -> None:
        if self._since is not None:
            now = time.monotonic()
            self.seconds += now - self._since
            self._since = now

    def on_train_batch_end(self, *args: Any) -> None:
        self._tick()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tick()
        self._since = None

    def state_dict(self) -> dict[str, float]:
        self._tick()
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.seconds = float(state_dict["seconds"])


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def export_backbone(model, cfg: DictConfig, out_dir: Path, seconds: float, steps: int) -> Path:
    """Write `<backbone>_synthetic.pt` (its state dict in fp16, integer buffers as they are) and its card."""
    name = model.backbone_name
    state = {
        k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
        for k, v in model.net.backbone.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = weights_path(name, "synthetic")
    path = out_dir / path.name
    atomic_write_bytes(path, buffer.getvalue())
    data = OmegaConf.to_container(cfg.data, resolve=True)
    card = {
        "backbone": name,
        "objective": {
            "terms": dict(cfg.loss_weights),
            "parts": "cross-entropy over background + the 14 coarse DensePose parts, at stride 4",
            "keypoints": "COCO-17 heatmaps at stride 4, cross-entropy of a spatial softmax per keypoint",
            "surface": "template-mesh coordinates (m) at the annotated DensePose points, smooth L1",
            "joints3d": "H36M-17 joints minus the pelvis (m), from the pooled stride-32 features, smooth L1",
        },
        "data": {
            "train": [spec.get("root") for spec in data["train"]],
            "held_out": f"images whose id is a multiple of {cfg.holdout_every}, from the same train split",
            "val_split_read": False,
            "augment": dict(data.get("augment") or {}),
        },
        "image_size": list(cfg.image_size),
        "batch_size": int(cfg.batch_size),
        "steps": steps,
        "optimizer": dict(cfg.optimizer),
        "scheduler": dict(cfg.scheduler),
        "precision": str(cfg.trainer.precision),
        "wall_time_s": round(seconds, 1),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "held_out_metrics": {k: round(float(v), 3) for k, v in model.last_metrics.items() if k != "step"},
        "dtype": "float16",
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    }
    atomic_write_bytes(out_dir / card_path(name, "synthetic").name, (json.dumps(card, indent=2) + "\n").encode())
    return path
