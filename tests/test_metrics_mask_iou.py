"""MaskIoU: mean of per-instance IoU, by hand."""

import pytest
import torch

from densehmr.metrics import MaskIoU


def test_mean_of_per_instance_iou():
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :, :2] = True
    gt[0] = True  # IoU 8/16
    pred[1, :1, :1] = True
    gt[1, :1, :1] = True  # IoU 1 (a pooled IoU would be dominated by instance 0)
    # instance 2: both empty, left out
    metric = MaskIoU()
    metric.update(pred[:2], gt[:2])
    metric.update(pred[2:], gt[2:])
    assert float(metric.compute()) == pytest.approx((0.5 + 1.0) / 2)


def test_valid_flag_and_empty():
    pred = torch.ones(2, 3, 3, dtype=torch.bool)
    gt = torch.zeros(2, 3, 3, dtype=torch.bool)
    gt[0, 0, 0] = True
    metric = MaskIoU()
    assert torch.isnan(metric.compute())
    metric.update(pred, gt, valid=torch.tensor([True, False]))
    assert float(metric.compute()) == pytest.approx(1 / 9)
