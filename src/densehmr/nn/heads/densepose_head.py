"""DensePose-RCNN's head on a whole-crop feature map (no ROI pooling, no FPN).

features at strides >= `feature_stride` -> 1x1 lateral convs, upsampled to that stride and summed
-> num_convs x (3x3 conv, width, [norm], ReLU) -> 4x4 deconv, stride 2 (the predictor) -> bilinear to
the output: stride feature_stride / 4 (DensePose's deconv x2 then bilinear x2), the crop resolution, or
`predictor` (the deconv's own stride, feature_stride / 2). Losses read the maps at the annotated points
by bilinear interpolation and predictions are upsampled to the crop anyway, so `predictor` gives the
same supervision without the upsampled maps' cost (a third of a CPU training step at stride 4).
The predictor's channels are split into named outputs (part logits, U, V, coarse segmentation, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

OUTPUT_RESOLUTIONS = ("stride", "crop", "predictor")
NORMS = ("none", "gn", "bn")


class DensePoseHead(nn.Module):
    """Dense predictions from backbone features.

    in_channels, in_strides: the backbone's levels (e.g. strides 4, 8, 16, 32).
    outputs: name -> number of channels of each output map.
    Forward: features (list of (B, C_k, ~H/s_k, ~W/s_k)) and the crop size (H, W) ->
    name -> (B, channels, h, w), (h, w) = (H, W) // (feature_stride / 4), (H, W), or
    (H, W) // (feature_stride / 2).
    norm: none (DensePose-RCNN's head) | gn (GroupNorm, 32 groups) | bn after each tower conv.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        outputs: Mapping[str, int],
        *,
        feature_stride: int,
        width: int,
        num_convs: int,
        output_resolution: str,
        norm: str,
    ) -> None:
        super().__init__()
        if feature_stride not in in_strides:
            raise ValueError(f"feature_stride {feature_stride} is not a backbone stride {list(in_strides)}")
        if feature_stride < 4 or feature_stride % 4:
            raise ValueError(f"feature_stride must be a multiple of 4, got {feature_stride}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(
                f"output_resolution must be one of {OUTPUT_RESOLUTIONS}, got {output_resolution!r}"
            )
        self.levels = [i for i, s in enumerate(in_strides) if s >= feature_stride]
        self.feature_stride = feature_stride
        # Stride of the output maps over the crop: DensePose's bilinear x2 after the deconv, the deconv's own, or 1.
        self.output_stride = {"stride": feature_stride // 4, "predictor": feature_stride // 2, "crop": 1}[
            output_resolution
        ]
        self.output_resolution = output_resolution
        self.outputs = dict(outputs)
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[i], width, 1) for i in self.levels)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=norm == "none")]
            if norm == "gn":
                layers.append(nn.GroupNorm(32, width))
            elif norm == "bn":
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*layers)
        self.predictor = nn.ConvTranspose2d(width, sum(self.outputs.values()), 4, stride=2, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # Convs as DensePose-RCNN (MSRA fill, zero biases). The predictor starts near zero, as Mask
        # R-CNN's mask predictor, not MSRA-filled as DensePose's: that fill makes the first part
        # cross-entropy ~5.5 instead of ln 25 and slows early training (tests/test_densereg.py overfit).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the output maps for an (H, W) crop."""
        h, w = image_size
        return max(h // self.output_stride, 1), max(w // self.output_stride, 1)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        base = features[self.levels[0]]
        x = self.lateral[0](base)
        for conv, level in zip(self.lateral[1:], self.levels[1:], strict=True):
            lateral = conv(features[level])
            x = x + F.interpolate(lateral, size=base.shape[-2:], mode="bilinear", align_corners=False)
        x = self.predictor(self.tower(x))
        size = self.output_size(image_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return dict(zip(self.outputs, x.split(list(self.outputs.values()), dim=1), strict=True))
