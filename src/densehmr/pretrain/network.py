"""The pretraining network: a backbone, a light FPN neck, and the objective's heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densehmr.nn.backbones import Backbone

NUM_PART_CLASSES = 15  # background + DensePose's 14 coarse parts
NUM_KEYPOINTS = 17  # COCO-17
NUM_JOINTS3D = 17  # H36M-17, pelvis first


class FPNNeck(nn.Module):
    """Top-down feature pyramid summed at the finest backbone level (stride 4 for every backbone here).

    Input: the backbone's list of (B, C_k, H_k, W_k). Output: (B, channels, H_0, W_0).
    """

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )

    def forward(self, feats: list[Tensor]) -> Tensor:
        y = self.lateral[-1](feats[-1])
        for feat, lateral in zip(reversed(feats[:-1]), reversed(self.lateral[:-1]), strict=True):
            y = F.interpolate(y, size=feat.shape[-2:], mode="nearest") + lateral(feat)
        return self.smooth(y)


class PretrainNet(nn.Module):
    """Backbone + neck + heads.

    forward(image (B, 3, H, W), ImageNet-normalized) -> dict of
      parts (B, 15, H/4, W/4) logits; heatmaps (B, 17, H/4, W/4) logits (a spatial softmax per keypoint);
      surface (B, 3, H/4, W/4) template-mesh coordinates of the visible surface, metres;
      joints3d (B, 17, 3) H36M-17 joints relative to the pelvis, metres, camera axes.
    """

    def __init__(self, backbone: Backbone, neck_channels: int = 64, global_channels: int = 256) -> None:
        super().__init__()
        if backbone.out_strides[0] != 4:
            raise ValueError(f"the pretraining heads need a stride-4 level; the backbone has {backbone.out_strides}")
        self.backbone = backbone
        self.neck = FPNNeck(backbone.out_channels, neck_channels)
        self.dense = nn.Conv2d(neck_channels, NUM_PART_CLASSES + NUM_KEYPOINTS + 3, 1)
        self.global_head = nn.Sequential(
            nn.Linear(backbone.out_channels[-1], global_channels), nn.ReLU(inplace=True),
            nn.Linear(global_channels, NUM_JOINTS3D * 3),
        )

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        feats = self.backbone(image)
        dense = self.dense(self.neck(feats))
        parts, heatmaps, surface = dense.split([NUM_PART_CLASSES, NUM_KEYPOINTS, 3], dim=1)
        pooled = feats[-1].mean(dim=(2, 3))
        joints3d = self.global_head(pooled).view(-1, NUM_JOINTS3D, 3)
        return {"parts": parts, "heatmaps": heatmaps, "surface": surface, "joints3d": joints3d}


def sample_map(values: Tensor, xy: Tensor, stride: int) -> Tensor:
    """Bilinear samples of a stride-`stride` map at crop pixel positions.

    values (B, C, h, w); xy (B, P, 2) crop px (pixel centres at integers) -> (B, P, C).
    """
    h, w = values.shape[-2:]
    size = torch.tensor([w * stride, h * stride], dtype=xy.dtype, device=xy.device)
    grid = (xy + 0.5) / size * 2 - 1
    out = F.grid_sample(values, grid[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)
