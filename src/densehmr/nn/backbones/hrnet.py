"""HRNet-W32 / W48 (HRNet-ImageNet and HRNet-pose trunk) with the official code's parameter names.

Stem: two stride-2 3x3 convs (64 ch) and 4 Bottlenecks (256 ch) at stride 4. Stages 2-4 run 2/3/4
parallel branches at strides 4/8/16/32 of widths W, 2W, 4W, 8W (4 BasicBlocks each) and fuse them
after every module by summing: upsampling paths are 1x1 conv + BN + nearest upsampling, downsampling
paths chains of stride-2 3x3 conv + BN (+ ReLU between). Modules per stage: 1, 4, 3.
"""

from __future__ import annotations

from torch import Tensor, nn

from densehmr.nn.backbones.base import Backbone
from densehmr.nn.backbones.resnet import BasicBlock, Bottleneck, conv3x3, residual_stage

_MODULES_PER_STAGE = (1, 4, 3)
_BLOCKS_PER_BRANCH = 4


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, relu: bool) -> nn.Sequential:
    """Conv (no bias) + BN (+ ReLU); children named 0, 1 (, 2) as in the official code."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
    layers = [conv, nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def downsampling_path(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """steps stride-2 3x3 convs; all but the last keep in_channels and end in ReLU."""
    return nn.Sequential(
        *[conv_bn(in_channels, in_channels, 3, 2, relu=True) for _ in range(steps - 1)],
        conv_bn(in_channels, out_channels, 3, 2, relu=False),
    )


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by an all-to-all fusion.

    fuse_all: fuse into every branch. If False (the pose network's last module) only the stride-4
    branch is fused; the other branches are returned as their blocks left them.
    """

    def __init__(self, channels: list[int], fuse_all: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            residual_stage(BasicBlock, width, width, _BLOCKS_PER_BRANCH, stride=1) for width in channels
        )
        self.fuse_layers = nn.ModuleList()
        for i in range(len(channels) if fuse_all else 1):
            paths = nn.ModuleList()
            for j, width in enumerate(channels):
                if j > i:
                    paths.append(conv_bn(width, channels[i], 1, 1, relu=False))
                elif j == i:
                    paths.append(None)
                else:
                    paths.append(downsampling_path(width, channels[i], i - j))
            self.fuse_layers.append(paths)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        """Branch i: (B, C_i, H_i, W_i) in and out; H_i = ceil(H_0 / 2**i)."""
        x = [branch(feature) for branch, feature in zip(self.branches, inputs, strict=True)]
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            total = x[i]
            for j, path in enumerate(paths):
                if j < i:
                    total = total + path(x[j])
                elif j > i:
                    # Upsampling to the exact size (not a fixed factor) keeps odd input sizes working.
                    upsampled = nn.functional.interpolate(path(x[j]), size=x[i].shape[-2:], mode="nearest")
                    total = total + upsampled
            fused.append(self.relu(total))
        return fused + x[len(fused):]


def transition(in_channels: list[int], out_channels: list[int]) -> nn.ModuleList:
    """Adapt stage outputs to the next stage: re-width existing branches, add a strided branch."""
    layers = nn.ModuleList()
    for i, width in enumerate(out_channels):
        if i < len(in_channels):
            same = width == in_channels[i]
            layers.append(None if same else conv_bn(in_channels[i], width, 3, 1, relu=True))
        else:
            steps = i + 1 - len(in_channels)
            source = in_channels[-1]
            layers.append(nn.Sequential(
                *[conv_bn(source, source, 3, 2, relu=True) for _ in range(steps - 1)],
                conv_bn(source, width, 3, 2, relu=True),
            ))
    return layers


class HRNet(Backbone):
    """HRNet-W{width}; returns its 4 branch outputs at strides 4, 8, 16, 32, widths [W, 2W, 4W, 8W]
    (num_stages < 4: the network up to stage num_stages, num_stages branches).

    pose_layout: build the last module as the pose network does (fusion into the stride-4 branch only),
    so the official pose checkpoints (pose_hrnet_w32_256x192.pth, ...) load; the three coarser outputs
    are then unfused branch outputs. Default: the HRNet-ImageNet layout, every output fused.
    """

    head_prefixes = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")

    def __init__(self, width: int, pose_layout: bool = False, norm_eval: bool = False, num_stages: int = 4) -> None:
        channels = [width * 2**i for i in range(self.check_stages(num_stages))]
        super().__init__(channels, [4, 8, 16, 32][:num_stages], norm_eval)
        self.head_prefixes = (
            *self.head_prefixes, *(p for k in range(num_stages + 1, 5) for p in (f"transition{k - 1}.", f"stage{k}."))
        )
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = conv3x3(64, 64, stride=2)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = residual_stage(Bottleneck, 64, 64, 4, stride=1)
        previous = [64 * Bottleneck.expansion]
        for stage, num_modules in enumerate(_MODULES_PER_STAGE[: num_stages - 1], start=2):
            current = channels[:stage]
            # The pose network's very last module fuses into the stride-4 branch only.
            partial_fuse = [pose_layout and stage == 4 and m == num_modules - 1 for m in range(num_modules)]
            modules = [HighResolutionModule(current, fuse_all=not partial) for partial in partial_fuse]
            self.add_module(f"transition{stage - 1}", transition(previous, current))
            self.add_module(f"stage{stage}", nn.Sequential(*modules))
            previous = current
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [(B, W, H/4, W/4), (B, 2W, H/8, ...), (B, 4W, H/16, ...), (B, 8W, H/32, ...)]."""
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        features = [self.layer1(x)]
        for index in range(1, len(self.out_channels)):
            transition_layers, stage = getattr(self, f"transition{index}"), getattr(self, f"stage{index + 1}")
            inputs = []
            for i, layer in enumerate(transition_layers):
                source = features[min(i, len(features) - 1)]
                inputs.append(source if layer is None else layer(source))
            features = stage(inputs)
        return features


def hrnet_w32(**kwargs) -> HRNet:
    """HRNet-W32: branch widths [32, 64, 128, 256]."""
    return HRNet(32, **kwargs)


def hrnet_w48(**kwargs) -> HRNet:
    """HRNet-W48: branch widths [48, 96, 192, 384]."""
    return HRNet(48, **kwargs)
