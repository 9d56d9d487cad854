"""VertexPose (MeshPose's 2D branch): one heatmap per low-poly vertex at stride 4, and a foreground mask.

Backbone levels (strides 4, 8, 16[, 32]) are fused into one stride-4 map by `StrideFourNeck` (HRNet's
highest branch plays that part in the official model); a 1x1 conv gives the vertex heatmaps, whose
2D soft-argmax with a gain (official 10, optionally learned) places each vertex, and a small conv
stack gives the person mask that VertexPose's DensePose uses for foreground. The neck's and the mask
head's 3x3 convolutions are full or depthwise-separable (`NECKS`; separable: MeshPose light).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densehmr.geometry.argsoftmax import argsoftmax_2d


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, then 1x1 + BN + ReLU: a 3x3 conv_bn_relu's receptive field at
    1/9 + 1/out_channels of its multiply-adds (MobileNet's factorization)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        *conv_bn_relu(in_channels, out_channels, kernel_size=1),
    )


NECKS = {"standard": conv_bn_relu, "separable": separable_conv_bn_relu}


class StrideFourNeck(nn.Module):
    """Sum of 1x1-projected levels upsampled to the first (stride-4) level, then a 3x3 conv (`kind`: full or
    separable, NECKS).

    Input: list of (B, in_channels[k], H_k, W_k); output (B, channels, H_0, W_0).
    """

    def __init__(self, in_channels: list[int], channels: int, kind: str = "standard") -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_channels])
        self.fuse = NECKS[kind](channels, channels)
        self.out_channels = channels

    def forward(self, levels: list[Tensor]) -> Tensor:
        size = levels[0].shape[-2:]
        fused = self.lateral[0](levels[0])
        for proj, level in zip(self.lateral[1:], levels[1:], strict=True):
            fused = fused + F.interpolate(proj(level), size=size, mode="bilinear", align_corners=False)
        return self.fuse(fused)


class VertexPoseHead(nn.Module):
    """Per-vertex heatmaps and their soft-argmax positions.

    forward(features (B, C, h, w)) -> heatmaps (B, v, h, w) logits, xy (B, v, 2) crop px
    (continuous pixel coordinates: heatmap cell centre (j + 0.5) * stride).
    """

    def __init__(self, in_channels: int, num_vertices: int, *, stride: int, gain: float, learn_gain: bool) -> None:
        super().__init__()
        self.stride = stride
        self.heatmap = nn.Conv2d(in_channels, num_vertices, 1)
        log_gain = torch.tensor(math.log(gain))
        if learn_gain:
            self.log_gain = nn.Parameter(log_gain)
        else:
            self.register_buffer("log_gain", log_gain)

    @property
    def gain(self) -> Tensor:
        return self.log_gain.exp()

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = features.shape
        v = self.heatmap.out_channels
        # The 1x1 convolution as the matrix product it is, so that the heatmaps come out (B, v, h, w)
        # contiguous whatever the features' layout: the softmax over pixels and the sampling at points read
        # them that way, and a channels-last convolution output cost two full copies per training step.
        heatmaps = torch.baddbmm(self.heatmap.bias[:, None].expand(b, v, h * w),
                                 self.heatmap.weight.reshape(v, c).expand(b, v, c), features.reshape(b, c, h * w))
        heatmaps = heatmaps.view(b, v, h, w)
        return heatmaps, argsoftmax_2d(heatmaps, self.gain) * self.stride


class MaskHead(nn.Module):
    """Foreground logits (B, 1, h, w) from features (B, C, h, w): `convs` 3x3 convolutions of `hidden`
    channels (`kind`: full or separable), then a 1x1 to one logit."""

    def __init__(self, in_channels: int, hidden: int = 64, kind: str = "standard", convs: int = 1) -> None:
        super().__init__()
        if convs < 1:
            raise ValueError(f"the mask head needs at least one 3x3 convolution, got {convs}")
        widths = [in_channels] + [hidden] * convs
        tower = [NECKS[kind](a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        self.body = nn.Sequential(*tower, nn.Conv2d(hidden, 1, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.body(features)
