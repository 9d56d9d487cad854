"""Rotation conversions against scipy's Rotation and hand-solved cases."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from densehmr.geometry.rotations import (
    axis_angle_to_rotmat,
    project_to_rotation,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_quaternion,
    rotmat_to_rot6d,
)


def _random_axis_angle(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(Rotation.random(n, random_state=seed).as_rotvec())


def test_6d_round_trip_and_layout():
    rot = axis_angle_to_rotmat(_random_axis_angle(64))
    six = rotmat_to_rot6d(rot)
    # Interleaved layout: (r00, r01, r10, r11, r20, r21).
    expected = torch.stack([rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 1]], -1)
    torch.testing.assert_close(six, expected)
    torch.testing.assert_close(rot6d_to_rotmat(six), rot, atol=1e-12, rtol=0)


def test_6d_gram_schmidt_hand_solved():
    # Columns (2, 0, 0) and (1, 3, 0): b1 = x, b2 = y, b3 = z.
    six = torch.tensor([2.0, 1.0, 0.0, 3.0, 0.0, 0.0])
    torch.testing.assert_close(rot6d_to_rotmat(six), torch.eye(3))


def test_6d_any_input_gives_a_rotation():
    six = torch.randn(100, 24, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rot = rot6d_to_rotmat(six)
    assert rot.shape == (100, 24, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(100, 24, dtype=torch.float64))
    # The first column keeps the first input column's direction.
    first = six.reshape(100, 24, 3, 2)[..., 0]
    torch.testing.assert_close(rot[..., 0], first / first.norm(dim=-1, keepdim=True))


def test_axis_angle_matches_scipy():
    aa = _random_axis_angle(200, seed=2)
    expected = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    torch.testing.assert_close(axis_angle_to_rotmat(aa), expected, atol=1e-12, rtol=0)
    back = rotmat_to_axis_angle(expected)
    torch.testing.assert_close(axis_angle_to_rotmat(back), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(back, aa, atol=1e-9, rtol=0)  # random angles are below pi here


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 1e-3, math.pi - 1e-6, math.pi])
def test_axis_angle_stable_near_zero_and_pi(angle):
    axes = torch.randn(50, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    aa = torch.nn.functional.normalize(axes, dim=-1) * angle
    expected = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    rot = axis_angle_to_rotmat(aa)
    torch.testing.assert_close(rot, expected, atol=1e-12, rtol=0)
    back = rotmat_to_axis_angle(rot)
    torch.testing.assert_close(axis_angle_to_rotmat(back), expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(back.norm(dim=-1), torch.full((50,), angle, dtype=torch.float64), atol=1e-12, rtol=0)
    # Float32 gives finite values too.
    assert torch.isfinite(rotmat_to_axis_angle(rot.float())).all()


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_rotmat(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    # d R / d w at 0 is the skew matrix: gradcheck at and away from 0.
    for aa in (torch.full((2, 3), 1e-5, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)):
        assert torch.autograd.gradcheck(axis_angle_to_rotmat, (aa.requires_grad_(True),))


def test_quaternion_matches_scipy():
    rot = Rotation.random(100, random_state=4)
    q = rotmat_to_quaternion(torch.from_numpy(rot.as_matrix()))
    xyzw = rot.as_quat()
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], 1)
    wxyz *= np.sign(wxyz[:, :1])
    torch.testing.assert_close(q, torch.from_numpy(wxyz), atol=1e-12, rtol=0)


def test_project_to_rotation():
    rot = axis_angle_to_rotmat(_random_axis_angle(10, seed=5))
    noisy = rot + 0.01 * torch.randn(10, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    proj = project_to_rotation(noisy)
    torch.testing.assert_close(torch.linalg.det(proj), torch.ones(10, dtype=torch.float64))
    assert (proj - rot).norm(dim=(-1, -2)).max() < 0.03
    torch.testing.assert_close(project_to_rotation(rot), rot)
    # The mean of a rotation and its reflection-free neighbours is the rotation itself.
    torch.testing.assert_close(project_to_rotation(2.0 * rot), rot)
