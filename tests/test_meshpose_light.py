"""MeshPose's faster formulations compute what the plain layers compute."""

from __future__ import annotations

import copy

import pytest
import torch

from densehmr.nn.heads.lifting import BinRegressor


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bin_regressor_equals_its_conv1d_layers(mode: str):
    torch.manual_seed(0)
    reg = BinRegressor(24, num_vertices=7, hidden=5, bins=6).double()
    with torch.no_grad():  # BatchNorm away from its identity start
        reg.expand[1].running_mean.normal_()
        reg.expand[1].running_var.uniform_(0.5, 2.0)
        reg.expand[1].weight.normal_()
    getattr(reg, mode)()
    layers = copy.deepcopy(reg)
    pooled = torch.randn(4, 24, dtype=torch.float64)
    want = layers.per_vertex(layers.expand(pooled[:, :, None]).view(4, 5, 6))  # the layers as declared
    torch.testing.assert_close(reg(pooled), want, atol=1e-12, rtol=1e-12)
    # Training mode updates the running statistics alike.
    for name, buffer in reg.expand[1].named_buffers():
        torch.testing.assert_close(buffer, dict(layers.expand[1].named_buffers())[name])
