"""Augmentation: random crop geometry, photometric jitter, synthetic occluders, and the label changes a
horizontal flip or an in-plane rotation implies (parts, UVs, keypoint order, SMPL pose, camera).

Camera frame: x right, y down, z forward (pixels = K @ X). Rotating the crop by theta is rotating the scene
by Rz(theta) about the camera z axis (as SPIN does for global_orient); a flip is the reflection x -> -x.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

# albumentations asks PyPI for a newer version on import unless told not to; we never go online.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from densehmr.body.assets import COCO17_MIRROR, H36M17_MIRROR, MASK14_MIRROR, SMPL24_MIRROR, Body

FaceMapper = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MIRROR_X = np.diag([-1.0, 1.0, 1.0])
_MASK14_MIRROR_T = torch.tensor(MASK14_MIRROR, dtype=torch.long)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; every probability 0 (or `enabled: false`) turns a piece off.

    scale: crop zoom drawn in [1 - scale, 1 + scale].  rotation: max |angle| in degrees, applied with
    rotation_prob.  translation: max centre shift as a fraction of the box.  color_jitter: brightness,
    contrast, saturation amplitude (hue gets a fifth of it).  occlusion_max: at most this many
    occluders, each `occlusion_size` (min, max) fraction of the person box.
    """

    enabled: bool = True
    scale: float = 0.25
    rotation: float = 30.0
    rotation_prob: float = 0.6
    translation: float = 0.1
    flip_prob: float = 0.5
    color_jitter: float = 0.3
    color_prob: float = 0.8
    blur_prob: float = 0.1
    noise_prob: float = 0.1
    jpeg_prob: float = 0.1
    occlusion_prob: float = 0.3
    occlusion_max: int = 2
    occlusion_size: tuple[float, float] = (0.1, 0.4)

    @classmethod
    def from_dict(cls, options: dict | None) -> AugmentConfig:
        options = dict(options or {})
        if "occlusion_size" in options:
            options["occlusion_size"] = tuple(options["occlusion_size"])
        return cls(**options)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the geometric augmentation. scale > 1 zooms in; shift is in box units."""

    scale: float = 1.0
    rotation: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    occlude: bool = False
    photometric: bool = False


def draw_params(config: AugmentConfig | None, rng: np.random.Generator) -> AugmentParams:
    """Random geometric parameters; the identity when augmentation is off."""
    if config is None or not config.enabled:
        return AugmentParams()
    rotate = rng.random() < config.rotation_prob
    return AugmentParams(
        scale=float(rng.uniform(1 - config.scale, 1 + config.scale)),
        rotation=float(rng.uniform(-config.rotation, config.rotation)) if rotate else 0.0,
        shift=tuple(rng.uniform(-config.translation, config.translation, size=2).tolist()),
        flip=bool(rng.random() < config.flip_prob),
        occlude=bool(rng.random() < config.occlusion_prob),
        photometric=True,
    )


def photometric_pipeline(config: AugmentConfig) -> A.Compose:
    """Colour jitter, blur, noise and JPEG artefacts (albumentations), on uint8 RGB crops."""
    j = config.color_jitter
    return A.Compose(
        [
            A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 5, p=config.color_prob),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=config.blur_prob),
            A.GaussNoise(std_range=(0.02, 0.08), p=config.noise_prob),
            A.ImageCompression(quality_range=(30, 90), p=config.jpeg_prob),
        ]
    )


def occlude(image: np.ndarray, box: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """`image` (H, W, 3) uint8 with 1..occlusion_max rectangles or ellipses of random colour or noise
    centred inside `box` (4,) xywh crop px. Labels are left as they are: DensePose points are annotation,
    not visibility."""
    out = image.copy()
    h, w = image.shape[:2]
    x, y, bw, bh = box
    for _ in range(int(rng.integers(1, config.occlusion_max + 1))):
        size = rng.uniform(*config.occlusion_size, size=2) * np.array([bw, bh])
        cx, cy = x + rng.random() * bw, y + rng.random() * bh
        shape = np.zeros((h, w), dtype=np.uint8)
        if rng.random() < 0.5:
            p0 = (int(cx - size[0] / 2), int(cy - size[1] / 2))
            p1 = (int(cx + size[0] / 2), int(cy + size[1] / 2))
            cv2.rectangle(shape, p0, p1, 1, thickness=-1)
        else:
            axes = (max(1, int(size[0] / 2)), max(1, int(size[1] / 2)))
            cv2.ellipse(shape, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        inside = shape.astype(bool)
        if rng.random() < 0.5:
            out[inside] = rng.integers(0, 256, size=3, dtype=np.uint8)
        else:
            out[inside] = rng.integers(0, 256, size=(int(inside.sum()), 3), dtype=np.uint8)
    return out


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ImageNet-normalized."""
    return ((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def flip_coco17(keypoints: np.ndarray) -> np.ndarray:
    """COCO-17 (17, C) after a flip: left and right swapped (coordinates come from the flipped affine)."""
    return keypoints[list(COCO17_MIRROR)]


def flip_smpl_pose(pose: np.ndarray) -> np.ndarray:
    """(72,) SMPL axis-angle pose of the mirrored body: joints swapped, each rotation (x, -y, -z)."""
    return (pose.reshape(24, 3)[list(SMPL24_MIRROR)] * np.array([1.0, -1.0, -1.0])).reshape(72).astype(pose.dtype)


def rotate_z(angle_deg: float) -> np.ndarray:
    """(3, 3) rotation about the camera z axis turning the image by `angle_deg` (see crop.rotation_2d)."""
    out = np.eye(3)
    a = np.deg2rad(angle_deg)
    out[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return out


@dataclass(frozen=True)
class PelvisModel:
    """The body model's root joint as a function of shape: J0(betas) = offset + dirs @ betas (metres).

    Needed because SMPL rotates the body about J0, not the origin: turning the scene by G keeps
    `verts = body(pose, betas) + cam_t` only with cam_t' = G (cam_t + J0) - J0.
    """

    offset: np.ndarray
    dirs: np.ndarray

    def __call__(self, betas: np.ndarray) -> np.ndarray:
        b = min(len(betas), self.dirs.shape[1])
        return self.offset + self.dirs[:, :b] @ betas[:b]

    @classmethod
    def from_body(cls, body: Body) -> PelvisModel:
        """Read J0's regressor row and shape space from the body's SMPL-layout model file (via smplx)."""
        import smplx

        model = smplx.SMPL(model_path=str(body.model_file), vertex_ids=body.vertex_ids, num_betas=10)
        row = model.J_regressor[0].double()
        offset = (row @ model.v_template.double()).numpy()
        dirs = np.einsum("v,vcb->cb", row.numpy(), model.shapedirs.double().numpy())
        return cls(offset=offset, dirs=dirs)


@dataclass(frozen=True)
class SceneTargets:
    """3D targets after the augmentation, all in the crop's camera frame. None where the input had none."""

    pose: np.ndarray | None
    joints3d: np.ndarray | None
    cam_K: np.ndarray | None
    cam_t: np.ndarray | None


def transform_scene(
    pose: np.ndarray | None,
    betas: np.ndarray | None,
    joints3d: np.ndarray | None,
    cam_K: np.ndarray | None,
    cam_t: np.ndarray | None,
    image_to_crop: np.ndarray,
    rotation_deg: float,
    pelvis: PelvisModel | None,
) -> SceneTargets:
    """Move the 3D targets with an unflipped crop: the scene turns by G = Rz(rotation_deg) and the
    intrinsics become K' = A K G^T (A the (3, 3) image -> crop affine), so K' G X projects where A K X did.

    pose (72,), betas (10,), joints3d (17, 4) camera-frame metres + confidence, cam_K (3, 3), cam_t (3,).
    """
    turn = rotate_z(rotation_deg)
    new_pose = None
    if pose is not None:
        new_pose = pose.astype(np.float64).copy()
        if rotation_deg:
            new_pose[:3] = Rotation.from_matrix(turn @ Rotation.from_rotvec(new_pose[:3]).as_matrix()).as_rotvec()
        new_pose = new_pose.astype(np.float32)
    new_joints = None
    if joints3d is not None:
        new_joints = joints3d.astype(np.float64).copy()
        new_joints[:, :3] = new_joints[:, :3] @ turn.T
        new_joints = new_joints.astype(np.float32)
    new_t = None
    if cam_t is not None:
        root = _root(pose, betas, pelvis) if rotation_deg else np.zeros(3)
        new_t = turn @ (cam_t + root) - root
    new_K = None
    if cam_K is not None:
        new_K = np.vstack([image_to_crop, [0.0, 0.0, 1.0]]) @ cam_K @ turn.T
    return SceneTargets(pose=new_pose, joints3d=new_joints, cam_K=new_K, cam_t=new_t)


def _root(pose: np.ndarray | None, betas: np.ndarray | None, pelvis: PelvisModel | None) -> np.ndarray:
    """J0 (3,) of the body the parameters describe; the origin when there are none."""
    if pose is None or betas is None:
        return np.zeros(3)
    if pelvis is None:
        raise ValueError("rotating or flipping SMPL parameters needs the body's PelvisModel")
    return pelvis(np.asarray(betas, dtype=np.float64))


def flip_sample(
    sample: dict[str, Tensor],
    body: Body,
    face_mappers: tuple[FaceMapper, FaceMapper],
    pelvis: PelvisModel | None,
    surface: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The sample mirrored about the crop's vertical centre line (x -> W - x); an involution up to the
    UV flip table's 1/255 resolution. Labels follow: DensePose parts and UVs (`body.flip_iuv`, then the
    surface points again), mask parts, COCO-17 and H36M-17 order, SMPL pose, camera (scene x -> -x).
    `surface`: the flipped labels and their surface points if precomputed (`SurfaceTable`)."""
    out = dict(sample)
    width = sample["image"].shape[-1]
    pixel_flip = torch.tensor([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    mirror_x = torch.from_numpy(MIRROR_X)

    out["image"] = sample["image"].flip(-1)
    out["mask"] = sample["mask"].flip(-1)
    out["mask_parts"] = _MASK14_MIRROR_T[sample["mask_parts"].flip(-1)]

    xy = sample["dp_xy"].clone()
    xy[:, 0] = width - xy[:, 0]
    out["dp_xy"] = xy
    if surface is None:
        part, u, v = body.flip_iuv(sample["dp_I"], sample["dp_U"], sample["dp_V"])
        out.update(dp_I=part.long(), dp_U=u.float(), dp_V=v.float())

    kp = sample["kp2d"].clone()
    kp[:, 0] = width - kp[:, 0]
    out["kp2d"] = kp[list(COCO17_MIRROR)]
    joints = sample["kp3d"].clone()
    joints[:, 0] = -joints[:, 0]
    out["kp3d"] = joints[list(H36M17_MIRROR)]

    pose = flip_smpl_pose(torch.cat([sample["global_orient"], sample["body_pose"]]).numpy())
    out["global_orient"] = torch.from_numpy(pose[:3].copy())
    out["body_pose"] = torch.from_numpy(pose[3:].copy())
    has_smpl = bool(sample["has_smpl"])
    root = _root(pose if has_smpl else None, sample["betas"].numpy() if has_smpl else None, pelvis)
    root_t = torch.from_numpy(root)
    cam_t = sample["cam_t"].double()
    out["cam_t"] = (mirror_x @ (cam_t + root_t) - root_t).float()
    out["cam_K"] = (pixel_flip @ sample["cam_K"].double() @ mirror_x).float()
    if not bool(sample["has_cam"]):
        out["cam_K"], out["cam_t"] = sample["cam_K"], sample["cam_t"]

    box = sample["bbox"].clone()
    box[0] = width - box[0] - box[2]
    out["bbox"] = box
    out["affine"] = (_to_3x3(sample["affine"].double()) @ pixel_flip)[:2].float()
    return attach_surface_points(out, face_mappers, surface)


def surface_points(part: Tensor, u: Tensor, v: Tensor, face_mappers: tuple[FaceMapper, FaceMapper]) -> dict:
    """dp_face (P,) long, dp_bary (P, 3) and dp_face_low, dp_bary_low of DensePose points (part, U, V)."""
    face, bary = face_mappers[0](part, u, v)
    face_low, bary_low = face_mappers[1](part, u, v)
    return {
        "dp_face": face.long(),
        "dp_bary": bary.float(),
        "dp_face_low": face_low.long(),
        "dp_bary_low": bary_low.float(),
    }


def attach_surface_points(
    sample: dict[str, Tensor], face_mappers: tuple[FaceMapper, FaceMapper], surface: dict[str, Tensor] | None = None
) -> dict:
    """Adds each DensePose point's face and barycentrics on the full and the low-poly mesh (from `surface`
    when precomputed); points that map to no face leave dp_valid; sets has_dp."""
    if surface is None:
        surface = surface_points(sample["dp_I"], sample["dp_U"], sample["dp_V"], face_mappers)
    sample.update(surface)
    sample["dp_valid"] = sample["dp_valid"] & (sample["dp_face"] >= 0) & (sample["dp_face_low"] >= 0)
    sample["has_dp"] = sample["dp_valid"].any()
    return sample


class SurfaceTable:
    """Surface points of every DensePose point of a reader, for its labels as annotated and (if `flips`)
    as flipped, computed in one batched pass (mapping a few points per sample costs far more per point)."""

    def __init__(
        self,
        part: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        body: Body,
        face_mappers: tuple[FaceMapper, FaceMapper],
        flips: bool = True,
    ) -> None:
        labels = torch.from_numpy(part).long(), torch.from_numpy(u).float(), torch.from_numpy(v).float()
        variants = [({}, labels)]
        if flips:
            flipped = dict(zip(("dp_I", "dp_U", "dp_V"), body.flip_iuv(*labels), strict=True))
            variants.append((flipped, tuple(flipped.values())))
        self._tables = []
        for names, values in variants:
            points = surface_points(*values, face_mappers)
            points["dp_face"] = points["dp_face"].int()  # int32 halves the table; widened per sample
            points["dp_face_low"] = points["dp_face_low"].int()
            self._tables.append({**points, **names})

    def points(self, offset: int, count: int, flipped: bool) -> dict[str, Tensor] | None:
        """The `count` points from `offset`: their surface points and, if `flipped`, their flipped labels;
        None if the flipped variant was not built."""
        if int(flipped) >= len(self._tables):
            return None
        out = {key: value[offset : offset + count] for key, value in self._tables[int(flipped)].items()}
        out["dp_face"] = out["dp_face"].long()
        out["dp_face_low"] = out["dp_face_low"].long()
        if flipped:
            out["dp_I"] = out["dp_I"].long()
        return out


def _to_3x3(affine: Tensor) -> Tensor:
    return torch.cat([affine, affine.new_tensor([[0.0, 0.0, 1.0]])])
