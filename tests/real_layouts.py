"""Small files written exactly as the official preprocessing writes them (SPIN's datasets/preprocess/
{coco,h36m,h36m_train,pw3d,mpi_inf_3dhp}.py, EFT's npz export, DensePose-COCO's JSON): field names, dtypes,
shapes, SPIN's 24-joint slots, image-path conventions. People are posed bodies, so 2D and 3D agree.

The joint slots are SPIN's own index lists, written here as numbers (not through our name tables), so the
tests check our tables against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from densehmr.body.assets import Body
from densehmr.body.smpl_layout import make_smplx

# SPIN's coco.py `joints_idx`: the SPIN-24 slot of each COCO-17 keypoint.
SPIN_COCO_SLOTS = [19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0]
# SPIN's h36m.py `global_idx` (and mpi_inf_3dhp.py `joints_idx`): the slot of each joint of SPIN's H36M-17
# order, which lists the left leg (1-3) before the right (4-6).
SPIN_H36M_SLOTS = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
# Our H36M-17 (right leg first) from SPIN's order: swap the legs.
OURS_FROM_SPIN_H36M = [0, 4, 5, 6, 1, 2, 3, *range(7, 17)]
IMAGE_HW = (120, 160)
FOCAL_PER_SCALE = 5000.0 * 200.0 / 224.0  # SPIN: 5000 px for its 224-px crop of scale * 200 px


def spin_focal(scale: float) -> float:
    return FOCAL_PER_SCALE * scale


def intrinsics(focal: float, center: np.ndarray) -> np.ndarray:
    return np.array([[focal, 0.0, center[0]], [0.0, focal, center[1]], [0.0, 0.0, 1.0]])


def project(k: np.ndarray, points: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[:, :2] / uvw[:, 2:]


@dataclass
class Person:
    """A posed body: SMPL-format parameters, its translation and its joints (camera frame, metres)."""

    pose: np.ndarray  # (72,)
    betas: np.ndarray  # (10,)
    cam_t: np.ndarray  # (3,)
    coco17: np.ndarray  # (17, 3) camera frame
    h36m17: np.ndarray  # (17, 3) camera frame, our order


def people(body: Body, n: int, seed: int, depth: float = 40.0) -> list[Person]:
    """n upright bodies facing the camera (y down), slightly posed, `depth` metres away."""
    rng = np.random.default_rng(seed)
    model = make_smplx(body.model_file, body.vertex_ids)
    out = []
    for _ in range(n):
        pose = np.concatenate([[np.pi, 0.0, 0.0], rng.normal(scale=0.15, size=69)])
        pose[:3] += rng.normal(scale=0.1, size=3)
        betas = rng.normal(scale=0.5, size=10)
        cam_t = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), depth * rng.uniform(0.9, 1.1)])
        with torch.no_grad():
            verts = model(
                betas=torch.tensor(betas, dtype=torch.float32)[None],
                body_pose=torch.tensor(pose[3:], dtype=torch.float32)[None],
                global_orient=torch.tensor(pose[:3], dtype=torch.float32)[None],
            ).vertices[0].double().numpy()
        verts = verts + cam_t
        out.append(Person(pose, betas, cam_t, body.regressors["coco17"].double().numpy() @ verts,
                          body.regressors["h36m17"].double().numpy() @ verts))
    return out


def write_images(root: Path, names: list[str], hw: tuple[int, int] = IMAGE_HW, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in sorted(set(names)):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8))


def keypoints_of(k: np.ndarray, person: Person, hidden: tuple[int, ...] = ()) -> np.ndarray:
    """(17, 3) COCO keypoints px with COCO visibility 2 (0 for `hidden`, coordinates zeroed)."""
    kp = np.zeros((17, 3))
    kp[:, :2] = project(k, person.coco17)
    kp[:, 2] = 2
    kp[list(hidden)] = 0
    return kp


def square_box(center, scale: float) -> list[float]:
    """The square COCO box (xywh) whose SPIN center and scale (1.2 x side / 200) are these."""
    side = scale * 200 / 1.2
    return [float(center[0] - side / 2), float(center[1] - side / 2), side, side]


def spin_coco_rows(boxes: list[list[float]], keypoints: list[np.ndarray]) -> dict[str, np.ndarray]:
    """center, scale, part as SPIN's coco.py computes them (visibility > 0 -> 1, COCO-17 into its slots)."""
    center = np.array([[b[0] + b[2] / 2, b[1] + b[3] / 2] for b in boxes])
    scale = np.array([1.2 * max(b[2], b[3]) / 200 for b in boxes])
    part = np.zeros((len(boxes), 24, 3))
    for i, kp in enumerate(keypoints):
        kp = kp.copy()
        kp[kp[:, 2] > 0, 2] = 1
        part[i, SPIN_COCO_SLOTS] = kp
    return {"center": center, "scale": scale, "part": part}


def write_coco_npz(
    path: Path, imgnames: list[str], boxes: list[list[float]], keypoints: list[np.ndarray],
    fits: list[Person] | None = None, annot_ids: list[int] | None = None,
) -> Path:
    """SPIN's coco_2014_train.npz (imgname, center, scale, part, openpose); with `fits`, EFT's export
    (pose, shape, has_smpl and a blank S), with `annot_ids` EFT's annotIds."""
    n = len(imgnames)
    arrays = {"imgname": np.array(imgnames), **spin_coco_rows(boxes, keypoints)}
    openpose = np.zeros((n, 25, 3))
    openpose[:, 0] = [50.0, 40.0, 0.8]  # OpenPose's nose
    arrays["openpose"] = openpose
    if fits is not None:
        arrays["pose"] = np.stack([p.pose for p in fits])
        arrays["shape"] = np.stack([p.betas for p in fits])
        arrays["has_smpl"] = np.ones(n)
        arrays["S"] = np.zeros((n, 24, 4))
    if annot_ids is not None:
        arrays["annotIds"] = np.array(annot_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def h36m_s24(person: Person) -> np.ndarray:
    """(24, 4) SPIN's S of a person: its H36M-17 in SPIN's order, pelvis-centred, in SPIN's slots."""
    spin_order = np.empty((17, 3))
    spin_order[OURS_FROM_SPIN_H36M] = person.h36m17
    s = np.zeros((24, 4))
    s[SPIN_H36M_SLOTS, :3] = spin_order - spin_order[0]
    s[SPIN_H36M_SLOTS, 3] = 1
    return s


def write_h36m_npz(path: Path, frames: list[Person], imgnames: list[str], with_part: bool, center, scale) -> Path:
    """SPIN's h36m_train.npz (imgname 'images/...', center, scale, part, S, openpose) or, without part,
    h36m_valid_protocol2.npz (imgname, center, scale, S). part is S projected by SPIN's camera of the row."""
    n = len(frames)
    arrays = {"imgname": np.array(imgnames), "center": np.asarray(center, float), "scale": np.asarray(scale, float)}
    arrays["S"] = np.stack([h36m_s24(p) for p in frames])
    if with_part:
        part = np.zeros((n, 24, 3))
        for i, p in enumerate(frames):
            spin_order = np.empty((17, 3))
            spin_order[OURS_FROM_SPIN_H36M] = p.h36m17
            k = intrinsics(spin_focal(arrays["scale"][i]), arrays["center"][i])
            part[i, SPIN_H36M_SLOTS, :2] = project(k, spin_order)
            part[i, SPIN_H36M_SLOTS, 2] = 1
        arrays["part"] = part
        arrays["openpose"] = np.zeros((n, 25, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_pw3d_npz(path: Path, frames: list[Person], imgnames: list[str], genders: list[str], center, scale) -> Path:
    """SPIN's 3dpw_test.npz: imgname, center, scale, pose (camera frame), shape, gender ('m'/'f')."""
    arrays = {
        "imgname": np.array(imgnames), "center": np.asarray(center, float), "scale": np.asarray(scale, float),
        "pose": np.stack([p.pose for p in frames]), "shape": np.stack([p.betas for p in frames]),
        "gender": np.array(genders),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def densepose_json(path: Path, images: list[dict], annotations: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return path


def densepose_person(ann_id: int, image_id: int, bbox: list[float], keypoints: np.ndarray, seed: int = 0) -> dict:
    """A DensePose-COCO person: box, keypoints, one polygon, 20 DensePose points."""
    rng = np.random.default_rng(seed)
    x, y, w, h = bbox
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": bbox, "area": w * h * 0.5,
        "num_keypoints": int((keypoints[:, 2] > 0).sum()), "keypoints": keypoints.reshape(-1).tolist(),
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        "dp_x": rng.uniform(20, 236, 20).tolist(), "dp_y": rng.uniform(20, 236, 20).tolist(),
        "dp_I": rng.integers(1, 25, 20).astype(float).tolist(), "dp_U": rng.uniform(0, 1, 20).tolist(),
        "dp_V": rng.uniform(0, 1, 20).tolist(),
    }
