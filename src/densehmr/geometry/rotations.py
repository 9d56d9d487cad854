"""Rotation representations: 6D (Zhou et al.), axis-angle and rotation matrices, batched over any leading dims.

The 6D layout is the interleaved one of HMR-style regressors (SPIN, PyMAF): the first two columns of the
rotation matrix read row by row, (r00, r01, r10, r11, r20, r21), so a 6-vector viewed as (3, 2) holds
the two columns side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this angle (radians) the Rodrigues coefficients switch to their Taylor series.
_SMALL_ANGLE = 1e-3


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from 6D vectors (..., 6) by Gram-Schmidt on the two columns.

    Any two non-parallel columns map to a proper rotation (det +1) whose first column is along the
    first one and whose second lies in the plane of both."""
    cols = x.reshape(*x.shape[:-1], 3, 2)
    b1 = F.normalize(cols[..., 0], dim=-1)
    a2 = cols[..., 1]
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(rotmat: Tensor) -> Tensor:
    """6D vectors (..., 6) (r00, r01, r10, r11, r20, r21) from rotation matrices (..., 3, 3)."""
    return rotmat[..., :2].reshape(*rotmat.shape[:-2], 6)


def _skew(v: Tensor) -> Tensor:
    """Cross-product matrices (..., 3, 3) of vectors (..., 3)."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape, 3)


def axis_angle_to_rotmat(axis_angle: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) radians (Rodrigues' formula).

    R = I + a K + b K^2 with K the cross-product matrix of the vector itself, a = sin(t)/t and
    b = (1 - cos t)/t^2: written this way it has no division by the axis norm, and near t = 0 the
    coefficients come from their Taylor series, so values and gradients stay finite at zero."""
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < _SMALL_ANGLE**2
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotmat_to_quaternion(rotmat: Tensor) -> Tensor:
    """Unit quaternions (..., 4) (w, x, y, z) with w >= 0 from rotation matrices (..., 3, 3).

    Shepperd's method: of the four algebraically equivalent formulas, each sample uses the one whose
    divisor (4|w|, 4|x|, 4|y| or 4|z|) is largest, so no branch divides by a small number; this is
    what keeps rotations near pi (w ~ 0) accurate."""
    m = rotmat
    r00, r01, r02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    r10, r11, r12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Row k: 4 q_k * q, the quaternion scaled by four times its k-th component.
    candidates = torch.stack(
        [
            torch.stack([1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01], -1),
            torch.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], -1),
            torch.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], -1),
            torch.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], -1),
        ],
        dim=-2,
    )
    diagonal = candidates.diagonal(dim1=-2, dim2=-1)  # 4 q_k^2
    best = diagonal.argmax(-1, keepdim=True)
    chosen = candidates.gather(-2, best[..., None].expand(*best.shape, 4))[..., 0, :]
    quat = F.normalize(chosen, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: Tensor) -> Tensor:
    """Axis-angle vectors (..., 3), angle in [0, pi] for w >= 0, from unit quaternions (..., 4) (w, x, y, z)."""
    w, xyz = quat[..., :1], quat[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, w)
    small = sin_half < _SMALL_ANGLE
    # angle / sin(angle/2) = 2 (1 + angle^2/24 + O(angle^4)) near 0.
    factor = torch.where(small, 2.0 * (1.0 + angle**2 / 24.0), angle / sin_half.clamp(min=1e-12))
    return xyz * factor


def rotmat_to_axis_angle(rotmat: Tensor) -> Tensor:
    """Axis-angle vectors (..., 3) radians, angle in [0, pi], from rotation matrices (..., 3, 3)."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat))


def project_to_rotation(matrix: Tensor) -> Tensor:
    """The nearest rotation (Frobenius norm) (..., 3, 3) to each matrix (..., 3, 3), by SVD with the
    reflection removed; used to average rotations (the chordal L2 mean)."""
    u, _, vh = torch.linalg.svd(matrix)
    det = torch.linalg.det(u @ vh)
    fix = torch.ones_like(matrix[..., 0])
    fix[..., 2] = det.sign()
    return (u * fix[..., None, :]) @ vh
