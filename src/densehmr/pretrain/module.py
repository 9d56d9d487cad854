"""`BackbonePretraining`: the LightningModule that trains PretrainNet on the pretraining objective."""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor

from densehmr.body import load_body
from densehmr.fault import check_loss
from densehmr.nn.backbones import build_backbone
from densehmr.optim import build_optimization
from densehmr.pretrain.network import PretrainNet
from densehmr.pretrain.objective import batch_statistics, loss_terms, summarize


class BackbonePretraining(pl.LightningModule):
    """Trains `PretrainNet(backbone)`; validation reports the held-out metrics of its heads under `holdout/`.

    backbone: the backbone config node ({name, ...}, built without pretrained weights).
    loss_weights: weight of each term of densehmr.pretrain.objective.loss_terms.
    """

    nonfinite_policy = "raise"

    def __init__(
        self,
        backbone: Mapping,
        body: Mapping,
        loss_weights: Mapping[str, float],
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        neck_channels: int = 64,
    ) -> None:
        super().__init__()
        backbone_cfg = dict(backbone)
        self.backbone_name = backbone_cfg.pop("name")
        backbone_cfg.pop("pretrained", None)
        self.net = PretrainNet(build_backbone(self.backbone_name, **backbone_cfg), neck_channels)
        body_cfg = dict(body)
        mesh = load_body(body_cfg.pop("name", "open"), **body_cfg)
        self.register_buffer("template", mesh.v_template.float(), persistent=False)
        self.register_buffer("faces", mesh.faces.long(), persistent=False)
        self.loss_weights = {k: float(v) for k, v in loss_weights.items()}
        self.optimizer_cfg, self.scheduler_cfg = dict(optimizer), dict(scheduler or {})
        self.last_metrics: dict[str, float] = {}
        self._totals: dict[str, Tensor] = {}

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.net(image)

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        out = self(batch["image"])
        # The losses in float32 whatever the training precision (keypoint targets are sub-cell positions).
        with torch.autocast(device_type=batch["image"].device.type, enabled=False):
            out = {k: v.float() for k, v in out.items()}
            terms = loss_terms(out, batch, self.template, self.faces)
        weighted = {k: self.loss_weights[k] * v for k, v in terms.items() if self.loss_weights.get(k, 0.0)}
        return torch.stack(list(weighted.values())).sum(), weighted, out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if "image" not in batch:
            return None
        total, weighted, _ = self.compute_loss(batch)
        if not check_loss(self, total, weighted, self.nonfinite_policy):
            return None
        size = batch["image"].shape[0]
        for name, value in weighted.items():
            self.log(f"train/loss_{name}", value, batch_size=size)
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "image" not in batch:
            return
        total, _, out = self.compute_loss(batch)
        self.log("holdout/loss", total, batch_size=batch["image"].shape[0], sync_dist=True)
        for key, value in batch_statistics(out, batch, self.template, self.faces).items():
            self._totals[key] = self._totals.get(key, 0) + value

    def on_validation_epoch_end(self) -> None:
        if not self._totals:
            return
        totals = {k: self.trainer.strategy.reduce(v, reduce_op="sum") for k, v in self._totals.items()}
        self._totals = {}
        metrics = {f"holdout/{k}": v for k, v in summarize(totals).items()}
        for key, value in metrics.items():
            self.log(key, value, rank_zero_only=True)
        self.last_metrics = {**metrics, "step": int(self.global_step)}

    def configure_optimizers(self):
        def total_steps() -> int:
            return int(self.trainer.estimated_stepping_batches)

        return build_optimization(self.parameters(), self.optimizer_cfg, self.scheduler_cfg, total_steps)
