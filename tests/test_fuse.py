"""Folding BatchNorm into convolutions for inference: the folded copy computes what the original does."""

from __future__ import annotations

import torch
from torch import nn

from densehmr.nn.fuse import conv_bn_pairs, fuse_conv_bn, outputs_close


def _randomize_norms(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters away from their identity start."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


class _Residual(nn.Module):
    """The convolution's output is read by its BatchNorm and by the sum: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + self.norm(y)


def test_folded_sequential_computes_the_same():
    model = _randomize_norms(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                           nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    x = torch.randn(2, 3, 9, 9)
    folded, count = fuse_conv_bn(model, lambda m: m(x), outputs_close)
    assert count == 2 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_a_convolution_read_twice_is_not_folded():
    model = _randomize_norms(_Residual())
    x = torch.randn(1, 3, 5, 5)
    assert conv_bn_pairs(model, lambda m: m(x)) == [("conv", "norm")]  # adjacent in the trace ...
    folded, count = fuse_conv_bn(model, lambda m: m(x), outputs_close)  # ... but the outputs differ
    assert count == 0
    torch.testing.assert_close(folded(x), model(x))


def test_every_norm_of_resnet18_folds():
    from densehmr.nn.backbones import build_backbone

    model = _randomize_norms(build_backbone("resnet18"))
    x = torch.randn(1, 3, 64, 64)
    folded, count = fuse_conv_bn(model, lambda m: m(x), outputs_close)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    assert outputs_close(model(x), folded(x), rtol=1e-4)


def test_outputs_close_reads_nested_outputs():
    a = {"x": torch.tensor([1.0, 100.0]), "k": (torch.tensor([1, 2]),)}
    assert outputs_close(a, {"x": torch.tensor([1.05, 100.0]), "k": (torch.tensor([1, 2]),)})
    assert not outputs_close(a, {"x": torch.tensor([1.2, 100.0]), "k": (torch.tensor([1, 2]),)})
    assert not outputs_close(a, {"x": torch.tensor([1.0, 100.0]), "k": (torch.tensor([1, 3]),)})
