"""MeshPose's DensePose protocol on crops (the predicted IUV kept inside the GT person mask) and which
methods score their DensePose under it by default."""

import pytest
import torch
from method_factory import make_method
from test_metrics_densepose_ap import GEO, PART_UVS, ap_of_single

from densehmr.methods.base import BaseMethod
from densehmr.methods.dct import DCT
from densehmr.methods.densereg import DenseReg
from densehmr.methods.meshpose import MeshPose
from densehmr.methods.pymaf import PyMAF
from densehmr.metrics import DensePoseAP


def one_crop():
    """A 40 x 40 crop, box = crop: the prediction is part 1 at evaluation point 0 everywhere; the GT
    person fills the left 23 columns, with two points inside it and one outside (column 30)."""
    iuv = torch.zeros(1, 3, 40, 40)
    iuv[:, 0] = 1.0
    iuv[:, 1], iuv[:, 2] = float(PART_UVS[0, 0]), float(PART_UVS[0, 1])
    gt_mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    gt_mask[:, :, :23] = True
    xy = torch.tensor([[[5.5, 10.5], [10.5, 30.5], [30.5, 20.5]]])
    part = torch.ones(1, 3)
    u, v = torch.full((1, 3), float(PART_UVS[0, 0])), torch.full((1, 3), float(PART_UVS[0, 1]))
    valid = torch.ones(1, 3, dtype=torch.bool)
    return iuv, xy, part, u, v, valid, gt_mask, torch.tensor([[0.0, 0.0, 40.0, 40.0]]), torch.tensor([True])


@pytest.mark.parametrize(
    "protocol, gps, iou",
    [
        ("unmasked", 1.0, 23 / 40),  # every point predicted exactly; the prediction covers the whole box
        ("gt_mask", 2 / 3, 1.0),  # the point outside the GT mask loses its prediction; masks agree
    ],
)
def test_gt_mask_protocol_on_a_hand_made_crop(protocol, gps, iou):
    metric = DensePoseAP(GEO, protocol=protocol)
    metric.update_crops(*one_crop())
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out["gps_ap"] == pytest.approx(ap_of_single(gps))
    assert out["iou_ap"] == pytest.approx(ap_of_single(iou))
    assert out["gpsm_ap"] == pytest.approx(ap_of_single((gps * iou) ** 0.5))


def test_crops_without_a_gt_mask_are_scored_as_predicted():
    iuv, xy, part, u, v, valid, _, bbox, has_dp = one_crop()
    empty = torch.zeros(1, 40, 40, dtype=torch.bool)
    metric = DensePoseAP(GEO, modes=("gps",), protocol="gt_mask")
    metric.update_crops(iuv, xy, part, u, v, valid, empty, bbox, has_dp)
    assert float(metric.compute()["gps_ap"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="protocol"):
        DensePoseAP(GEO, protocol="masked")


def test_mesh_methods_score_their_rendered_densepose_under_meshposes_protocol():
    assert BaseMethod.default_densepose_protocol == "unmasked" and DenseReg.default_densepose_protocol == "unmasked"
    assert MeshPose.default_densepose_protocol == PyMAF.default_densepose_protocol == "gt_mask"
    assert DCT.default_densepose_protocol == "gt_mask"
    options = dict(loss_weights={"kp2d": 1.0}, seed=None, hidden=32)
    assert make_method("dct", **options).metrics()["densepose"].protocol == "gt_mask"
    assert make_method("dct", "densepose_protocol=unmasked", **options).metrics()["densepose"].protocol == "unmasked"
    with pytest.raises(ValueError, match="densepose_protocol must be one of"):
        make_method("dct", "densepose_protocol=masked", **options)
    assert make_method("densereg", seed=None, head_width=8).metrics()["densepose"].protocol == "unmasked"
