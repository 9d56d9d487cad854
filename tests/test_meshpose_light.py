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


def test_the_light_experiment_is_a_cheaper_meshpose_with_the_same_outputs():
    from densehmr.bench.methods import forward_gflops
    from densehmr.nn.heads.vertexpose import separable_conv_bn_relu
    from densehmr.runs import build_method, compose_train

    def built(*extra: str):
        torch.manual_seed(0)
        cfg = compose_train(["method=meshpose", "logger=none", "backbone.pretrained=none", "image_size=[64,64]",
                             *extra])
        return build_method(cfg).eval()

    default, light = built(), built("experiment=meshpose_light")
    assert light.backbone.out_strides == [4, 8, 16] and light.neck.out_channels == 64
    assert isinstance(light.neck.fuse[0], torch.nn.Conv2d) and light.neck.fuse[0].groups == 64
    assert len(light.neck.fuse) == len(separable_conv_bn_relu(64, 64))
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, got = default(image), light(image)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert forward_gflops(light, image) < 0.7 * forward_gflops(default, image)
