"""The 3D supervision of the mesh methods: the body model's precision under mixed precision and the
balance of DCT's parameter terms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from densehmr.body.body_model import BodyModel
from densehmr.geometry.rotations import axis_angle_to_rotmat

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_body_model_poses_in_float32_under_bf16_autocast(body):
    """Skinning in bfloat16 moved vertices by ~3 mm on average and 15 mm at worst: the posed body under
    a bf16 autocast must be the float32 one (to float32 rounding, well under 0.1 mm)."""
    torch.manual_seed(0)
    model = BodyModel(body)
    pose = torch.randn(4, 24, 3) * 0.4
    pose[:, 0] = torch.tensor([math.pi, 0.0, 0.0])  # upright, facing the camera
    rotmat, betas = axis_angle_to_rotmat(pose), torch.randn(4, 10)
    reference = model(rotmat, betas)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(rotmat, betas)
    for name in ("vertices", "joints_h36m17", "joints_coco17"):
        got, want = getattr(mixed, name), getattr(reference, name)
        assert got.dtype == torch.float32, name
        assert (got - want).norm(dim=-1).max() < 1e-4, name  # metres


def test_dct_weighs_a_beta_as_one_rotation_matrix_entry():
    """DCT's trainer takes one MSE over the rotation-matrix entries and the betas together; split into a
    pose mean over 24 x 9 entries and a betas mean over 10 coefficients, the weights must keep that
    per-value balance (10 on both means made each beta weigh 21.6 matrix entries)."""
    weights = OmegaConf.load(CONFIGS / "method" / "dct.yaml").method.module.loss_weights
    per_entry = weights.pose / (24 * 9)
    per_beta = weights.betas / 10
    assert per_beta == pytest.approx(per_entry, rel=0.01)
