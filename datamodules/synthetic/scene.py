"""Scene layout of one synthetic image: who is in it, how they stand, and where the camera looks from.

Two frames are used. The *world* frame is the camera's before it tilts: x right, y down, z forward,
metres, the floor a horizontal plane y = const. The *camera* frame (OpenCV, what every annotation
uses) is X_cam = R_cam X_world, R_cam = Rz(roll) Rx(pitch) (pitch > 0 looks down).
Bodies are posed once in the world frame (global orientation Rx(180) Ry(yaw): upright, yaw 0 facing
the camera) and then moved by a world offset; SMPL's camera-frame parameters follow from that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamodules.synthetic.poses import POSE_NAMES, SELFIE_POSES, PoseSample, sample_pose

NUM_BETAS = 10
# Scene kinds and their probabilities: full bodies framed at any size, close truncated crops,
# selfies (camera at arm's length, looking down at the face).
KINDS = ("full", "close", "selfie")
KIND_PROBS = (0.68, 0.2, 0.12)
PEOPLE_PROBS = (0.5, 0.3, 0.2)  # 1, 2 or 3 people
_NON_SELFIE = tuple(n for n in POSE_NAMES if n not in SELFIE_POSES)
# Smallest world-frame distance (m) between two people's pelvises on the floor, so they do not interpenetrate.
MIN_SEPARATION = 0.7


@dataclass(frozen=True)
class PersonPlan:
    """betas (10,); pose (body pose); yaw (rad) about the vertical, 0 facing the camera."""

    betas: np.ndarray
    pose: PoseSample
    yaw: float


@dataclass(frozen=True)
class ScenePlan:
    """Everything random about an image's geometry except what depends on the posed meshes.

    focal: px.  kind: one of KINDS.  people: the main person first.
    frame: numbers drawn for the placement, consumed by `place` (see there).
    """

    size: int
    focal: float
    kind: str
    people: tuple[PersonPlan, ...]
    frame: dict[str, float]


@dataclass(frozen=True)
class Placement:
    """Where the posed people go: X_cam = rotation (X_world_posed + offset).

    rotation: (3, 3) R_cam.  offsets: (P, 3) world metres per person.
    horizon_row: image row (px) of the horizon, for the background.  floor: world y of the floor.
    """

    rotation: np.ndarray
    offsets: np.ndarray
    horizon_row: float
    floor: float


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def world_orientation(yaw: float) -> np.ndarray:
    """(3, 3) global orientation in the world frame of a body turned by `yaw`: SMPL's y-up, +z-facing
    body made upright in the y-down frame (Rx(180)) and facing the camera at yaw 0."""
    return rot_x(np.pi) @ rot_y(yaw)


def _yaw(rng: np.random.Generator, frontal_sigma_deg: float) -> float:
    if rng.random() < 0.6:
        return float(np.deg2rad(rng.normal(0.0, frontal_sigma_deg)))
    return float(rng.uniform(-np.pi, np.pi))


def _betas(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(0.0, 0.9, NUM_BETAS), -2.5, 2.5)


def sample_plan(rng: np.random.Generator, size: int) -> ScenePlan:
    """The random layout of one image of `size` x `size` px."""
    kind = KINDS[rng.choice(len(KINDS), p=KIND_PROBS)]
    count = 1 + rng.choice(len(PEOPLE_PROBS), p=PEOPLE_PROBS)
    if kind == "selfie":
        fov = rng.uniform(60.0, 80.0)
        main = PersonPlan(
            _betas(rng),
            sample_pose(rng, SELFIE_POSES, blend_prob=0.2, noise=0.6),
            float(np.deg2rad(rng.normal(0.0, 12.0))),
        )
    else:
        fov = rng.uniform(35.0, 70.0)
        main = PersonPlan(_betas(rng), sample_pose(rng, _NON_SELFIE), _yaw(rng, 35.0))
    others = tuple(
        PersonPlan(_betas(rng), sample_pose(rng, _NON_SELFIE), _yaw(rng, 50.0)) for _ in range(count - 1)
    )
    focal = size / (2.0 * np.tan(np.deg2rad(fov) / 2.0))
    frame = {
        "fraction": rng.uniform(1.1, 2.2) if kind == "close" else rng.uniform(0.45, 0.95),
        "u": rng.uniform(0.3, 0.7),
        "v": rng.uniform(0.3, 0.7) if kind == "close" else rng.uniform(0.4, 0.6),
        "focus": rng.uniform(0.0, 1.0),
        "roll": float(np.deg2rad(rng.normal(0.0, 4.0))),
        "selfie_distance": rng.uniform(0.45, 0.85),
        "selfie_pitch": float(np.deg2rad(rng.uniform(8.0, 30.0))),
        "selfie_v": rng.uniform(0.3, 0.5),
        "camera_height": rng.uniform(0.7, 1.9),
    }
    for k in range(1, count):
        frame[f"depth{k}"] = rng.uniform(0.5, 2.5)
        frame[f"u{k}"] = rng.uniform(-0.1, 1.1)
    return ScenePlan(size=size, focal=float(focal), kind=kind, people=(main, *others), frame=frame)


def _pixel_ray(u: float, v: float, size: int, focal: float) -> np.ndarray:
    """Unnormalized camera-frame ray (x, y, 1) through image fractions (u, v) of the width and height."""
    return np.array([(u - 0.5) * size / focal, (v - 0.5) * size / focal, 1.0])


def place(plan: ScenePlan, lo: np.ndarray, hi: np.ndarray, head: np.ndarray, pelvis: np.ndarray) -> Placement:
    """Offsets and camera rotation from the posed people's world-frame extents.

    lo, hi: (P, 3) per-person min/max of the posed vertices.  head, pelvis: (P, 3) joints.
    The main person stands on the floor `camera_height` below the camera (or holds the camera, for
    selfies), the camera tilted to frame them; the others stand on the same floor at their own
    depth, kept MIN_SEPARATION apart from everyone placed before them.
    """
    f, size, fr = plan.focal, plan.size, plan.frame
    count = len(plan.people)
    offsets = np.zeros((count, 3))
    if plan.kind == "selfie":
        pitch = fr["selfie_pitch"]
        rotation = rot_z(fr["roll"]) @ rot_x(pitch)
        ray = _pixel_ray(fr["u"], fr["selfie_v"], size, f)
        target_cam = fr["selfie_distance"] * ray / np.linalg.norm(ray)
        offsets[0] = rotation.T @ target_cam - head[0]
    else:
        height = hi[0, 1] - lo[0, 1]
        depth = f * height / (fr["fraction"] * size)
        centre = 0.5 * (lo[0] + hi[0])
        offsets[0] = (
            (fr["u"] - 0.5) * size * depth / f - centre[0],
            fr["camera_height"] - hi[0, 1],
            depth - centre[2],
        )
        # Full bodies are framed by their middle, close crops by a point between the head and the pelvis.
        if plan.kind == "close":
            focus = pelvis[0] + fr["focus"] * (head[0] - pelvis[0]) + offsets[0]
        else:
            focus = centre + offsets[0]
        pitch = np.arctan2(focus[1], focus[2]) - np.arctan((fr["v"] - 0.5) * size / f)
        pitch = float(np.clip(pitch, np.deg2rad(-35.0), np.deg2rad(50.0)))
        rotation = rot_z(fr["roll"]) @ rot_x(pitch)
    floor = hi[0, 1] + offsets[0, 1]
    main_depth = pelvis[0, 2] + offsets[0, 2]
    placed = [pelvis[0] + offsets[0]]
    for k in range(1, count):
        if plan.kind == "selfie":
            depth = 1.5 + 1.5 * fr[f"depth{k}"]
        else:
            depth = max(1.2, main_depth * fr[f"depth{k}"])
        x = (fr[f"u{k}"] - 0.5) * size * depth / f
        for _ in range(8):
            too_close = any(np.hypot(x - p[0], depth - p[2]) < MIN_SEPARATION for p in placed)
            if not too_close:
                break
            depth += MIN_SEPARATION
        offsets[k] = (x - pelvis[k, 0], floor - hi[k, 1], depth - pelvis[k, 2])
        placed.append(pelvis[k] + offsets[k])
    horizon = rotation @ np.array([0.0, 0.0, 1.0])
    horizon_row = size / 2.0 + f * horizon[1] / max(horizon[2], 1e-6)
    return Placement(rotation=rotation, offsets=offsets, horizon_row=float(horizon_row), floor=float(floor))
