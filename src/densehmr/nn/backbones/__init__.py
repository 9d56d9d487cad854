"""Image backbones returning feature maps at strides 4, 8, 16, 32 (or the first of them), built by name.

Parameter names follow torchvision (ResNet, MobileNet) and the official HRNet code, so published
ImageNet / pose checkpoints load from a local path with load_backbone_weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from densehmr.nn.backbones.base import Backbone
from densehmr.nn.backbones.hrnet import HRNet, hrnet_w32, hrnet_w48
from densehmr.nn.backbones.mobilenet import MobileNetV2, MobileNetV3Large, mobilenet_v2, mobilenet_v3_large
from densehmr.nn.backbones.resnet import ResNet, resnet18, resnet34, resnet50
from densehmr.nn.backbones.shipped import shipped_weights
from densehmr.nn.backbones.weights import load_backbone_weights, read_state_dict

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v2": mobilenet_v2,
    "hrnet_w32": hrnet_w32,
    "hrnet_w48": hrnet_w48,
}


def build_backbone(
    name: str, weights: str | Path | None = None, pretrained: str = "none", **kwargs
) -> Backbone:
    """Backbone `name` (a key of BACKBONES), loaded from the local checkpoint `weights` if given, else from the
    weights shipped with the package for `pretrained` ("synthetic": densehmr.pretrain's; "none": random init).

    kwargs go to the constructor: norm_eval and num_stages (all; 3 leaves the stride-32 stage out), classifier
    (ResNet, MobileNet), pose_layout (HRNet).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    model = BACKBONES[name](**kwargs)
    path = weights if weights is not None else shipped_weights(name, pretrained)
    if path is not None:
        load_backbone_weights(model, path)
    return model


__all__ = [
    "BACKBONES", "Backbone", "HRNet", "MobileNetV2", "MobileNetV3Large", "ResNet", "build_backbone",
    "load_backbone_weights", "read_state_dict",
]
