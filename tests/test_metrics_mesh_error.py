"""MeshError: similarity invariance of PA-MPJPE, reflections, hand-solved MPJPE/PVE, root protocols."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from densehmr.body.assets import H36M_TO_LSP14
from densehmr.metrics import MeshError
from densehmr.metrics.mesh_error import similarity_align


def regressor(v=60, seed=0) -> torch.Tensor:
    """(17, V) rows of convex weights, so regressed joints follow any affine map of the vertices."""
    w = torch.rand(17, v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) ** 4
    return w / w.sum(1, keepdim=True)


def rotations(b, seed=0) -> torch.Tensor:
    return torch.tensor(Rotation.random(b, random_state=seed).as_matrix())


def test_similarity_transform_has_zero_pa_error():
    reg = regressor()
    gt = torch.randn(4, 60, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.3
    pred = 1.7 * gt @ rotations(4).transpose(1, 2) + torch.tensor([0.1, -0.4, 3.0], dtype=torch.float64)
    metric = MeshError(reg)
    metric.update(pred_verts=pred, gt_verts=gt)
    out = metric.compute()
    assert float(out["pa_mpjpe"]) < 1e-6
    assert float(out["mpjpe"]) > 10  # rotation and scale are not removed by MPJPE
    assert float(out["pve"]) > 10  # nor by PVE


def test_reflection_is_not_undone():
    gt = torch.randn(3, 17, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.3
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    aligned = similarity_align(mirrored, gt)
    err = (aligned - gt).norm(dim=-1).mean()
    assert float(err) > 0.05
    # Reference: the best proper rotation (Kabsch, scipy) with its optimal scale and translation.
    for i in range(3):
        src = mirrored[i].numpy() - mirrored[i].numpy().mean(0)
        dst = gt[i].numpy() - gt[i].numpy().mean(0)
        rot, _ = Rotation.align_vectors(dst, src)
        moved = rot.apply(src)
        scale = (moved * dst).sum() / (src**2).sum()
        expected = scale * moved + gt[i].numpy().mean(0)
        np.testing.assert_allclose(aligned[i].numpy(), expected, atol=1e-9)


def test_a_collapsed_prediction_aligns_to_the_target_centroid():
    """All predicted joints at one point: the best similarity has scale 0, so every joint lands on the target's
    centroid (a finite error, not the 0/0 of the scale formula)."""
    target = torch.randn(2, 17, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    collapsed = torch.full((2, 17, 3), 0.3, dtype=torch.float64)
    aligned = similarity_align(collapsed, target)
    torch.testing.assert_close(aligned, target.mean(1, keepdim=True).expand_as(target))


def test_moving_one_joint_by_hand():
    gt = torch.randn(2, 17, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    delta = torch.tensor([0.014, 0.0, 0.0], dtype=torch.float64)
    ankle = gt.clone()
    ankle[:, H36M_TO_LSP14[0]] += delta  # right ankle: not a root joint
    hip = gt.clone()
    hip[:, H36M_TO_LSP14[2]] += delta  # right hip

    pelvis, hips = MeshError(regressor(), root="pelvis"), MeshError(regressor(), root="hips")
    assert pelvis.protocol == "lsp14/h36m-regressor/pelvis" and hips.protocol == "lsp14/h36m-regressor/hips"
    pelvis.update(pred_joints=ankle, gt_joints=gt)
    assert float(pelvis.compute()["mpjpe"]) == pytest.approx(14.0 / 14)
    pelvis.reset()
    pelvis.update(pred_joints=hip, gt_joints=gt)
    assert float(pelvis.compute()["mpjpe"]) == pytest.approx(14.0 / 14)
    # Centred on the hip midpoint, moving a hip shifts every joint by half of it.
    hips.update(pred_joints=hip, gt_joints=gt)
    assert float(hips.compute()["mpjpe"]) == pytest.approx(7.0)
    assert torch.isnan(hips.compute()["pve"])


def test_pve_is_unaligned_but_root_centred():
    reg = regressor()
    gt = torch.randn(2, 60, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.3
    metric = MeshError(reg)
    metric.update(pred_verts=gt + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), gt_verts=gt)
    assert float(metric.compute()["pve"]) == pytest.approx(0.0, abs=1e-9)

    rot = rotations(2, seed=5)
    pelvis = (reg.double() @ gt)[:, :1]
    pred = (gt - pelvis) @ rot.transpose(1, 2) + pelvis
    metric.reset()
    metric.update(pred_verts=pred, gt_verts=gt)
    expected = ((pred - pelvis) - (gt - pelvis)).norm(dim=-1).mean() * 1000
    assert float(metric.compute()["pve"]) == pytest.approx(float(expected))
    assert float(metric.compute()["pa_mpjpe"]) < 1e-6


def test_averages_over_batches_and_needs_both_sides():
    gt = torch.zeros(3, 17, 3, dtype=torch.float64)
    pred = gt.clone()
    pred[:, H36M_TO_LSP14[0], 0] = torch.tensor([0.014, 0.028, 0.042], dtype=torch.float64)
    metric = MeshError(regressor())
    metric.update(pred_joints=pred[:1], gt_joints=gt[:1])
    metric.update(pred_joints=pred[1:], gt_joints=gt[1:])
    assert float(metric.compute()["mpjpe"]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        metric.update(pred_joints=pred)
