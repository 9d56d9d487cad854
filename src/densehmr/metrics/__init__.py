"""Metrics shared by all methods: torchmetrics classes, DDP-safe, validated against the references."""

from densehmr.metrics.densepose_ap import DensePoseAP
from densehmr.metrics.keypoint_ap import KeypointAP
from densehmr.metrics.mask_iou import MaskIoU
from densehmr.metrics.mesh_error import MeshError

__all__ = ["DensePoseAP", "KeypointAP", "MaskIoU", "MeshError"]
