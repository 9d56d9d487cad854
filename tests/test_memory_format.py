"""Channels-last training: the layout changes, the numbers do not."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from densehmr.memory_format import ChannelsLast


class TinyConvNet(pl.LightningModule):
    """Convolutions and a batch norm; no bias before the norm, where the gradient is rounding noise that
    Adam would turn into full-size steps of either sign."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 1)
        )

    def training_step(self, batch, batch_idx):
        image, target = batch
        return (self.net(image) - target).square().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _fit(callbacks: list) -> TinyConvNet:
    torch.manual_seed(0)
    model = TinyConvNet()
    data = TensorDataset(torch.randn(8, 3, 12, 12), torch.randn(8, 1, 12, 12))
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, DataLoader(data, batch_size=4))
    return model


def test_the_module_trains_channels_last_and_reaches_the_same_weights():
    plain, nhwc = _fit([]), _fit([ChannelsLast()])
    conv = nhwc.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    state = nhwc.trainer.optimizers[0].state[conv]
    assert state["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
