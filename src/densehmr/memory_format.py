"""The memory format a run's convolutions compute in.

Channels-last (NHWC) is the layout oneDNN's CPU convolutions and cuDNN's tensor-core kernels are fastest
in; a convolution whose weight is channels-last computes channels-last whatever its input's layout, so
converting the module is enough. Training steps at the CPU default on a Xeon with AMX, bf16 autocast,
batch 16: DenseReg 1.32x, MeshPose 1.16x, DCT 1.12x, PyMAF 1.02x faster (results/budget.md)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class ChannelsLast(pl.Callback):
    """Puts the module's 4-D parameters and buffers in channels-last layout when the trainer sets up,
    before the optimizer is built (its state then takes the same layout) and before a checkpoint is
    loaded into them (loading copies values, keeping the layout)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
