"""MobileNetV2 and MobileNetV3-Large with torchvision's parameter names (`features.*`, `classifier.*`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from densehmr.nn.backbones.base import Backbone

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of divisor, never below divisor nor more than 10% under value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormAct(nn.Sequential):
    """Conv (no bias, 'same' padding) -> norm -> optional activation; children named 0, 1, 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: NormFactory,
        activation: ActFactory | None,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            norm(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gating: global pool -> 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid -> scale."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))
        return x * nn.functional.hardsigmoid(self.fc2(scale))


class InvertedResidualV2(nn.Module):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1 projection; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, nn.BatchNorm2d, nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, nn.BatchNorm2d, nn.ReLU6, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: optional expand -> depthwise kxk -> optional SE -> linear projection."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        hard_swish: bool,
        stride: int,
        norm: NormFactory,
    ) -> None:
        super().__init__()
        activation = nn.Hardswish if hard_swish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm, activation))
        layers.append(ConvNormAct(expanded, expanded, kernel_size, norm, activation, stride, groups=expanded))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm, None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class TappedFeatures(Backbone):
    """A `features` Sequential returning the outputs of its layers listed in `taps` (the last included)."""

    head_prefixes = ("classifier.",)

    def __init__(
        self, features: nn.Sequential, taps: list[int], out_channels: list[int], norm_eval: bool,
        num_stages: int = 4, classifier: bool = False,
    ) -> None:
        """num_stages < 4: `features` cut after the last tap kept (its later layers are not built into the model);
        classifier: whether the subclass builds one (it needs every stage)."""
        taps, out_channels = taps[: self.check_stages(num_stages, classifier)], out_channels[:num_stages]
        super().__init__(out_channels, [4, 8, 16, 32][:num_stages], norm_eval)
        self.head_prefixes = (*self.head_prefixes, *(f"features.{i}." for i in range(taps[-1] + 1, len(features))))
        self.features = features[: taps[-1] + 1]
        self.taps = taps

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> feature maps at strides 4, 8, 16, 32."""
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs

    def classify(self, features: list[Tensor]) -> Tensor:
        """ImageNet logits (B, 1000) from forward's output; needs classifier=True."""
        if self.classifier is None:
            raise RuntimeError(f"this {type(self).__name__} was built without its classifier")
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(features[-1], 1), 1))

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)


# MobileNetV2 stages (expand ratio t, out channels c, repeats n, first stride s), from the paper.
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

# MobileNetV3-Large blocks (in, kernel, expanded, out, SE, hard-swish, stride), from the paper's Table 1.
_V3_LARGE_BLOCKS = (
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
)


class MobileNetV2(TappedFeatures):
    """MobileNetV2 (width 1.0); outputs features.3 / .6 / .13 / .18: [24, 32, 96, 1280] channels.

    classifier: also build torchvision's `classifier` (dropout, 1280 -> 1000) for strict loading.
    """

    def __init__(self, classifier: bool = False, norm_eval: bool = False, num_stages: int = 4) -> None:
        layers: list[nn.Module] = [ConvNormAct(3, 32, 3, nn.BatchNorm2d, nn.ReLU6, stride=2)]
        in_channels = 32
        for expand_ratio, out_channels, repeats, stride in _V2_STAGES:
            for index in range(repeats):
                layers.append(InvertedResidualV2(in_channels, out_channels, stride if index == 0 else 1,
                                                 expand_ratio))
                in_channels = out_channels
        layers.append(ConvNormAct(in_channels, 1280, 1, nn.BatchNorm2d, nn.ReLU6))
        super().__init__(nn.Sequential(*layers), [3, 6, 13, 18], [24, 32, 96, 1280], norm_eval, num_stages, classifier)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000)) if classifier else None
        self._init_weights()


class MobileNetV3Large(TappedFeatures):
    """MobileNetV3-Large; outputs features.3 / .6 / .12 / .16: [24, 40, 112, 960] channels.

    BatchNorm uses eps 1e-3 and momentum 0.01 as torchvision (and the TF reference) do.
    classifier: also build torchvision's `classifier` (960 -> 1280, hard-swish, dropout, -> 1000).
    """

    def __init__(self, classifier: bool = False, norm_eval: bool = False, num_stages: int = 4) -> None:
        def norm(channels: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

        layers: list[nn.Module] = [ConvNormAct(3, 16, 3, norm, nn.Hardswish, stride=2)]
        layers += [InvertedResidualV3(*config, norm=norm) for config in _V3_LARGE_BLOCKS]
        layers.append(ConvNormAct(160, 960, 1, norm, nn.Hardswish))
        super().__init__(nn.Sequential(*layers), [3, 6, 12, 16], [24, 40, 112, 960], norm_eval, num_stages, classifier)
        self.classifier = (
            nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1280, 1000))
            if classifier
            else None
        )
        self._init_weights()


def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNetV2 at width 1.0."""
    return MobileNetV2(**kwargs)


def mobilenet_v3_large(**kwargs) -> MobileNetV3Large:
    """MobileNetV3-Large at width 1.0."""
    return MobileNetV3Large(**kwargs)
