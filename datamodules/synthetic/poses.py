"""Plausible body poses: hand-authored key poses, blended, mirrored, jittered and clamped to joint limits.

Angles are per SMPL joint (24, the root included but left at zero: the scene sets the global
orientation) as Euler (x, y, z) degrees in the joint's parent frame, composed R = Rx(x) Ry(y) Rz(z)
(z applied first). In SMPL's rest frame (y up, body facing +z, body's left = +x) that reads:
- hips: x < 0 swings the thigh forward, z > 0 abducts the left leg (z < 0 the right);
- knees: x > 0 bends the shin back; spine, neck, head: x > 0 bends forward, y turns;
- shoulders: z lowers/raises the arm in the frontal plane first (left arm down at z = -90, right at
  +90), then y turns the hanging arm about its own axis, then x < 0 swings it forward;
- elbows: y bends the forearm towards the front of the upper arm (left y < 0, right y > 0).
A left/right mirror keeps x and negates y and z, as it does for axis-angle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from densehmr.body.assets import SMPL24_MIRROR

JOINTS = (
    "pelvis",
    "l_hip",
    "r_hip",
    "spine1",
    "l_knee",
    "r_knee",
    "spine2",
    "l_ankle",
    "r_ankle",
    "spine3",
    "l_foot",
    "r_foot",
    "neck",
    "l_collar",
    "r_collar",
    "head",
    "l_shoulder",
    "r_shoulder",
    "l_elbow",
    "r_elbow",
    "l_wrist",
    "r_wrist",
    "l_hand",
    "r_hand",
)
J = {name: k for k, name in enumerate(JOINTS)}
_MIRROR = np.asarray(SMPL24_MIRROR)
_FLIP_YZ = np.array([1.0, -1.0, -1.0])

# Limits of the left-side and central joints, degrees ((xmin, xmax), (ymin, ymax), (zmin, zmax)).
_LEFT_LIMITS = {
    "pelvis": ((0, 0), (0, 0), (0, 0)),
    "l_hip": ((-130, 45), (-45, 45), (-25, 70)),
    "spine1": ((-25, 50), (-30, 30), (-25, 25)),
    "l_knee": ((0, 150), (-8, 8), (-8, 8)),
    "spine2": ((-20, 35), (-25, 25), (-20, 20)),
    "l_ankle": ((-40, 45), (-20, 20), (-25, 25)),
    "spine3": ((-20, 30), (-25, 25), (-20, 20)),
    "l_foot": ((-20, 20), (-10, 10), (-10, 10)),
    "neck": ((-30, 40), (-40, 40), (-25, 25)),
    "l_collar": ((-15, 15), (-25, 25), (-20, 30)),
    "head": ((-35, 40), (-50, 50), (-25, 25)),
    "l_shoulder": ((-180, 60), (-90, 90), (-100, 90)),
    "l_elbow": ((-25, 25), (-150, 5), (-10, 100)),
    "l_wrist": ((-60, 60), (-35, 35), (-70, 70)),
    "l_hand": ((-15, 15), (-15, 15), (-20, 20)),
}


def _limits() -> np.ndarray:
    """(24, 3, 2) lower/upper bound per joint and axis; right joints mirror the left ones."""
    lim = np.zeros((24, 3, 2))
    for name, bounds in _LEFT_LIMITS.items():
        lim[J[name]] = bounds
        if name.startswith("l_"):
            right = np.asarray(bounds, dtype=np.float64)
            right[1:] = -right[1:, ::-1]
            lim[J["r_" + name[2:]]] = right
    return lim


LIMITS = _limits()

# Per-axis noise (degrees, standard deviation) of each joint, left side and centre; mirrored to the right.
_LEFT_NOISE = {
    "l_hip": (6, 5, 4),
    "l_knee": (6, 1, 1),
    "l_ankle": (5, 3, 3),
    "spine1": (4, 4, 3),
    "spine2": (3, 4, 3),
    "spine3": (3, 4, 3),
    "neck": (6, 10, 4),
    "head": (8, 14, 6),
    "l_collar": (3, 4, 4),
    "l_shoulder": (14, 12, 10),
    "l_elbow": (4, 12, 6),
    "l_wrist": (12, 8, 12),
    "l_hand": (5, 5, 5),
    "l_foot": (4, 3, 3),
}


def _noise_scale() -> np.ndarray:
    out = np.zeros((24, 3))
    for name, sigma in _LEFT_NOISE.items():
        out[J[name]] = sigma
        if name.startswith("l_"):
            out[J["r_" + name[2:]]] = sigma
    return out


NOISE = _noise_scale()


def _pose(**joints: tuple[float, float, float]) -> np.ndarray:
    """(24, 3) Euler degrees from keyword joints, arms hanging relaxed unless given."""
    out = np.zeros((24, 3))
    out[J["l_shoulder"]] = (0, 0, -75)
    out[J["r_shoulder"]] = (0, 0, 75)
    out[J["l_elbow"]] = (0, -12, 0)
    out[J["r_elbow"]] = (0, 12, 0)
    for name, angles in joints.items():
        out[J[name]] = angles
    return out


# The key poses. Families with a left/right choice are mirrored at random when sampled.
KEY_POSES: dict[str, np.ndarray] = {
    "stand": _pose(l_hip=(0, 0, 4), r_hip=(0, 0, -4)),
    "stand_contrapposto": _pose(
        l_hip=(-6, 5, 8),
        r_hip=(2, 0, -2),
        l_knee=(12, 0, 0),
        spine1=(0, 0, 4),
        head=(0, 10, -4),
    ),
    "a_pose": _pose(l_shoulder=(0, 0, -45), r_shoulder=(0, 0, 45), l_hip=(0, 0, 6), r_hip=(0, 0, -6)),
    "walk": _pose(
        l_hip=(-28, 0, 2),
        r_hip=(16, 0, -2),
        l_knee=(8, 0, 0),
        r_knee=(30, 0, 0),
        l_ankle=(5, 0, 0),
        r_ankle=(-10, 0, 0),
        l_shoulder=(22, 0, -78),
        r_shoulder=(-25, 0, 78),
        l_elbow=(0, -15, 0),
        r_elbow=(0, 30, 0),
        spine2=(0, 5, 0),
    ),
    "run": _pose(
        l_hip=(-65, 0, 4),
        r_hip=(20, 0, -2),
        l_knee=(45, 0, 0),
        r_knee=(95, 0, 0),
        r_ankle=(25, 0, 0),
        spine1=(12, 0, 0),
        spine2=(6, 8, 0),
        l_shoulder=(45, 0, -70),
        r_shoulder=(-55, 0, 70),
        l_elbow=(0, -85, 0),
        r_elbow=(0, 95, 0),
    ),
    "sit_chair": _pose(
        l_hip=(-88, 0, 6),
        r_hip=(-88, 0, -6),
        l_knee=(88, 0, 0),
        r_knee=(88, 0, 0),
        l_shoulder=(-30, -10, -75),
        r_shoulder=(-30, 10, 75),
        l_elbow=(0, -55, 0),
        r_elbow=(0, 55, 0),
        spine1=(5, 0, 0),
    ),
    "sit_ground": _pose(
        l_hip=(-105, 15, 12),
        r_hip=(-105, -15, -12),
        l_knee=(125, 0, 0),
        r_knee=(125, 0, 0),
        l_ankle=(-15, 0, 0),
        r_ankle=(-15, 0, 0),
        l_shoulder=(-55, -15, -70),
        r_shoulder=(-55, 15, 70),
        l_elbow=(0, -35, 0),
        r_elbow=(0, 35, 0),
        spine1=(15, 0, 0),
        spine2=(8, 0, 0),
    ),
    "crouch": _pose(
        l_hip=(-115, 10, 18),
        r_hip=(-115, -10, -18),
        l_knee=(135, 0, 0),
        r_knee=(135, 0, 0),
        l_ankle=(-30, 0, 0),
        r_ankle=(-30, 0, 0),
        spine1=(25, 0, 0),
        spine2=(10, 0, 0),
        l_shoulder=(-45, -10, -75),
        r_shoulder=(-45, 10, 75),
        l_elbow=(0, -40, 0),
        r_elbow=(0, 40, 0),
    ),
    "arms_up": _pose(
        l_shoulder=(0, 0, 50),
        r_shoulder=(0, 0, -50),
        l_elbow=(0, -10, 0),
        r_elbow=(0, 10, 0),
        l_hip=(0, 0, 6),
        r_hip=(0, 0, -6),
        head=(-10, 0, 0),
    ),
    "arms_overhead": _pose(
        l_shoulder=(-165, 0, -80),
        r_shoulder=(-165, 0, 80),
        l_elbow=(0, -20, 0),
        r_elbow=(0, 20, 0),
        head=(-8, 0, 0),
    ),
    "wave": _pose(l_shoulder=(0, 0, 5), l_elbow=(0, -10, 85), head=(0, 8, 0)),
    "point": _pose(l_shoulder=(-85, 0, -10), l_elbow=(0, -5, 0), head=(0, 15, 0)),
    "arms_crossed": _pose(
        l_shoulder=(-20, -65, -75),
        r_shoulder=(-20, 65, 75),
        l_elbow=(0, -105, 0),
        r_elbow=(0, 105, 0),
    ),
    "phone": _pose(
        l_shoulder=(-25, -30, -75),
        l_elbow=(0, -115, 0),
        neck=(15, 0, 0),
        head=(25, 0, 0),
    ),
    "selfie": _pose(
        l_shoulder=(-120, 0, -70),
        l_elbow=(0, -20, 0),
        head=(-8, -10, 6),
        neck=(-5, 0, 0),
        r_shoulder=(-10, 0, 75),
        r_elbow=(0, 25, 0),
    ),
    "selfie_peace": _pose(
        l_shoulder=(-120, 0, -70),
        l_elbow=(0, -20, 0),
        head=(-8, -10, 6),
        r_shoulder=(-25, -20, 70),
        r_elbow=(0, 125, 0),
    ),
    "bend": _pose(
        spine1=(30, 0, 0),
        spine2=(20, 0, 0),
        spine3=(10, 0, 0),
        l_hip=(-35, 0, 5),
        r_hip=(-35, 0, -5),
        l_shoulder=(-55, 0, -80),
        r_shoulder=(-55, 0, 80),
        head=(-15, 0, 0),
    ),
    "lunge": _pose(
        l_hip=(-80, 0, 6),
        r_hip=(30, 0, -4),
        l_knee=(85, 0, 0),
        r_knee=(45, 0, 0),
        r_ankle=(15, 0, 0),
        l_shoulder=(0, 0, -60),
        r_shoulder=(0, 0, 60),
    ),
    "kneel": _pose(
        l_hip=(-85, 0, 5),
        r_hip=(5, 0, -5),
        l_knee=(90, 0, 0),
        r_knee=(95, 0, 0),
        r_ankle=(30, 0, 0),
        l_shoulder=(-35, 0, -75),
        l_elbow=(0, -40, 0),
    ),
    "jump": _pose(
        l_hip=(-10, 0, 25),
        r_hip=(-10, 0, -25),
        l_knee=(20, 0, 0),
        r_knee=(20, 0, 0),
        l_ankle=(30, 0, 0),
        r_ankle=(30, 0, 0),
        l_shoulder=(0, 0, 35),
        r_shoulder=(0, 0, -35),
    ),
}

# How often each key pose is the primary pose of a sampled body (the rest of the mass is spread evenly).
FAMILY_WEIGHTS = {
    "stand": 3.0,
    "stand_contrapposto": 2.0,
    "walk": 3.0,
    "run": 2.0,
    "sit_chair": 1.5,
    "sit_ground": 1.0,
    "crouch": 1.2,
    "arms_up": 1.0,
    "arms_overhead": 0.8,
    "wave": 1.0,
    "point": 0.8,
    "arms_crossed": 1.0,
    "phone": 1.0,
    "selfie": 0.6,
    "selfie_peace": 0.4,
    "bend": 0.8,
    "lunge": 0.8,
    "kneel": 0.7,
    "jump": 0.6,
    "a_pose": 0.5,
}
POSE_NAMES = tuple(KEY_POSES)
SELFIE_POSES = ("selfie", "selfie_peace")


@dataclass(frozen=True)
class PoseSample:
    """One sampled body pose.

    euler: (24, 3) degrees (root zero), within LIMITS.  name: the primary key pose.
    mirrored: whether left and right were swapped.
    """

    euler: np.ndarray
    name: str
    mirrored: bool


def mirror_euler(euler: np.ndarray) -> np.ndarray:
    """(..., 24, 3) Euler angles of the left/right mirrored pose."""
    return euler[..., _MIRROR, :] * _FLIP_YZ


def mirror_axis_angle(pose: np.ndarray) -> np.ndarray:
    """(..., 72) SMPL axis-angle pose of the left/right mirrored body (the root too)."""
    p = pose.reshape(*pose.shape[:-1], 24, 3)
    return (p[..., _MIRROR, :] * _FLIP_YZ).reshape(pose.shape)


def euler_to_axis_angle(euler: np.ndarray) -> np.ndarray:
    """(..., 24, 3) Euler degrees (R = Rx Ry Rz) -> (..., 72) axis-angle radians."""
    flat = euler.reshape(-1, 3)
    # scipy's lowercase sequence is extrinsic: "zyx" applies z, then y, then x, i.e. R = Rx Ry Rz.
    rotvec = Rotation.from_euler("zyx", flat[:, ::-1], degrees=True).as_rotvec()
    return rotvec.reshape(*euler.shape[:-2], 72)


def clamp_to_limits(euler: np.ndarray) -> np.ndarray:
    """(..., 24, 3) Euler degrees clamped into LIMITS."""
    return np.clip(euler, LIMITS[..., 0], LIMITS[..., 1])


def sample_pose(
    rng: np.random.Generator,
    names: tuple[str, ...] = POSE_NAMES,
    blend_prob: float = 0.5,
    noise: float = 1.0,
) -> PoseSample:
    """A key pose from `names` (weighted), maybe blended towards another key pose, mirrored with
    probability 1/2, jittered by `noise` times the per-joint noise, clamped to the joint limits."""
    weights = np.asarray([FAMILY_WEIGHTS.get(n, 1.0) for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    euler = KEY_POSES[name].copy()
    if rng.random() < blend_prob:
        other = KEY_POSES[POSE_NAMES[rng.integers(len(POSE_NAMES))]]
        # Blend only partway so the primary pose stays recognisable.
        euler += rng.uniform(0.0, 0.4) * (other - euler)
    mirrored = bool(rng.random() < 0.5)
    if mirrored:
        euler = mirror_euler(euler)
    euler = euler + noise * NOISE * rng.standard_normal((24, 3))
    euler[0] = 0.0
    return PoseSample(euler=clamp_to_limits(euler), name=name, mirrored=mirrored)
