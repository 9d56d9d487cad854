"""Person-mask IoU."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class MaskIoU(Metric):
    """Mean over instances of the per-instance IoU |P ∩ G| / |P ∪ G| (not the IoU of pooled pixels).

    Instances whose prediction and GT are both empty are left out (their IoU is undefined).
    compute() returns a 0-dim tensor (nan before any countable instance).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("iou_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor, valid: Tensor | None = None) -> None:
        """pred, gt (B, H, W) bool masks; valid (B,) bool selects the instances to count."""
        pred, gt = pred.bool().flatten(1), gt.bool().flatten(1)
        inter = (pred & gt).sum(1).double()
        union = (pred | gt).sum(1).double()
        keep = union > 0
        if valid is not None:
            keep &= valid.bool()
        self.iou_sum += (inter[keep] / union[keep]).sum()
        self.count += keep.sum()

    def compute(self) -> Tensor:
        count = self.count.double()
        return torch.where(
            count > 0, self.iou_sum / count.clamp(min=1), torch.full_like(self.iou_sum, torch.nan)
        )
