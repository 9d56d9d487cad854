"""ResNet-18/34/50 (v1.5, stride on the 3x3 conv) with torchvision's parameter names.

Names and shapes match torchvision.models.resnet*, so a torchvision ImageNet state dict loads by path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from densehmr.nn.backbones.base import Backbone


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN shortcut used when a residual block changes width or resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projected) shortcut; out channels = planes."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to 4 * planes, with a shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def residual_stage(
    block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, num_blocks: int, stride: int
) -> nn.Sequential:
    """num_blocks blocks, the first one strided and projecting inplanes -> planes * expansion."""
    out_channels = planes * block.expansion
    reshaped = stride != 1 or inplanes != out_channels
    downsample = projection(inplanes, out_channels, stride) if reshaped else None
    blocks = [block(inplanes, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class ResNet(Backbone):
    """ResNet returning layer1..layer4 outputs at strides 4, 8, 16, 32.

    classifier: also build torchvision's `fc` (1000 classes), so torchvision's state dict loads with
    strict=True and `classify` works; forward never uses it.
    zero_init_residual: start each block's last BN at zero (each block begins as the identity).
    """

    head_prefixes = ("fc.",)

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        classifier: bool = False,
        norm_eval: bool = False,
        zero_init_residual: bool = False,
        num_stages: int = 4,
    ) -> None:
        widths = [64, 128, 256, 512][: self.check_stages(num_stages, classifier)]
        super().__init__([w * block.expansion for w in widths], [4, 8, 16, 32][:num_stages], norm_eval)
        self.head_prefixes = (*self.head_prefixes, *(f"layer{i + 1}." for i in range(num_stages, 4)))
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, num_blocks) in enumerate(zip(widths, layers[:num_stages], strict=True)):
            stride = 1 if index == 0 else 2
            self.add_module(f"layer{index + 1}", residual_stage(block, inplanes, planes, num_blocks, stride))
            inplanes = planes * block.expansion
        self.fc = nn.Linear(inplanes, 1000) if classifier else None
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [layer1 (B, C1, H/4, W/4), ..., layer4 (B, C4, H/32, W/32)] (num_stages of them)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for index in range(len(self.out_channels)):
            x = getattr(self, f"layer{index + 1}")(x)
            features.append(x)
        return features

    def classify(self, features: list[Tensor]) -> Tensor:
        """ImageNet logits (B, 1000) from forward's output; needs classifier=True."""
        if self.fc is None:
            raise RuntimeError("this ResNet was built without its classifier (classifier=False)")
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features[-1], 1), 1))


def resnet18(**kwargs) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2], out channels [64, 128, 256, 512]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3], out channels [64, 128, 256, 512]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3], out channels [256, 512, 1024, 2048]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
