"""One dataset = one reader + the crop/augmentation pipeline: a validated person -> a training sample.

A sample is a dict of tensors (see `collate.py` for the batch contract). In skip mode a bad sample is
replaced by another random one while training (so batches stay full) and dropped at evaluation (so no
sample counts twice); either way the reasons travel with the batch under "skipped".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.camera_fit import BodyCameraFit
from datamodules.crop import (
    affine_scale,
    apply_affine,
    box_affine,
    box_through,
    compose,
    crop_affine,
    invert_affine,
    padded_box,
    scale_affine,
    warp,
)
from datamodules.errors import DataError, OnBadSample
from datamodules.readers import BodyTarget, RawSample, SampleReader
from datamodules.readers.densepose_coco import DP_BOX_SIZE, part_label_map, rle_to_mask
from datamodules.transforms import (
    AugmentConfig,
    AugmentParams,
    FaceMapper,
    PelvisModel,
    SurfaceTable,
    attach_surface_points,
    draw_params,
    flip_sample,
    normalize_image,
    occlude,
    photometric_pipeline,
    transform_scene,
)
from densehmr.body.assets import Body

# OpenCV decode flag per reduction factor (JPEG only: libjpeg scales in the DCT).
_REDUCED_READ = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


@dataclass(frozen=True)
class Skipped:
    """Stands in for a dropped sample: the reasons (DataError.kind) it was dropped."""

    kinds: tuple[str, ...]


def read_image(
    path: Path, expected_hw: tuple[int, int] | None, ann_id: int, reduction: int = 1
) -> tuple[np.ndarray, int]:
    """The RGB uint8 image at `path` and the factor it was decoded smaller by.

    JPEGs are decoded at 1/`reduction` (1, 2, 4 or 8; libjpeg scales in the DCT, faster and without
    aliasing), other formats at full size. DataError if missing, undecodable or not the annotated size.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError.at(path, "file_name", "missing file", ann_id, detail=type(exc).__name__) from exc
    if reduction not in _REDUCED_READ or data[:3].tobytes() != b"\xff\xd8\xff":
        reduction = 1
    image = None
    if data.size:
        try:
            image = cv2.imdecode(data, _REDUCED_READ[reduction])
        except cv2.error:
            image = None
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise DataError.at(path, "file_name", "not a readable image", ann_id)
    if expected_hw is not None:
        expected = tuple(-(-int(n) // reduction) for n in expected_hw)
        if image.shape[:2] != expected:
            detail = f"{image.shape[:2]} at 1/{reduction} vs {tuple(expected_hw)}"
            raise DataError.at(path, "width/height", "differs from the image file", ann_id, detail=detail)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), reduction


def decode_reduction(image_to_crop: np.ndarray) -> int:
    """Largest of 1, 2, 4, 8 at which the image still has at least the crop's resolution."""
    pixels_per_crop_pixel = 1.0 / affine_scale(image_to_crop)
    return max((r for r in _REDUCED_READ if r <= pixels_per_crop_pixel), default=1)


def default_face_mappers(body: Body) -> tuple[FaceMapper, FaceMapper]:
    """(I, U, V) -> (face, barycentrics) on the full and the low-poly mesh."""
    from densehmr.body.iuv_mapping import IUVMapper

    return IUVMapper(body.charts).to_face_bary, IUVMapper(body.lowpoly.charts).to_face_bary


class DenseHMRDataset(Dataset):
    """Crops and augments the people of one reader.

    image_size: (H, W) of the crop.  augment: None for evaluation (a plain crop).
    face_mappers / pelvis: shared precomputations; built from `body` when not given.
    camera_fit: fits the camera of people with SMPL parameters and keypoints but no camera; built from
    `body` on first use when not given.
    """

    def __init__(
        self,
        reader: SampleReader,
        body: Body,
        image_size: tuple[int, int] = (128, 128),
        augment: AugmentConfig | None = None,
        on_bad_sample: OnBadSample = "raise",
        face_mappers: tuple[FaceMapper, FaceMapper] | None = None,
        pelvis: PelvisModel | None = None,
        max_retries: int = 16,
        camera_fit: BodyCameraFit | None = None,
    ) -> None:
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
        self.reader = reader
        self.body = body
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.augment = augment if augment is not None and augment.enabled else None
        self.on_bad_sample = on_bad_sample
        self.face_mappers = face_mappers if face_mappers is not None else default_face_mappers(body)
        moves = self.augment is not None and (self.augment.rotation_prob > 0 or self.augment.flip_prob > 0)
        self.pelvis = pelvis if pelvis is not None or not moves else PelvisModel.from_body(body)
        self.max_retries = max_retries
        self.camera_fit = camera_fit
        table = getattr(reader, "dense_table", None)
        flips = self.augment is not None and self.augment.flip_prob > 0
        self.surface = SurfaceTable(*table(), body, self.face_mappers, flips) if table is not None else None
        self._photometric = photometric_pipeline(self.augment) if self.augment else None
        self._seed_key: int | None = None
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.reader)

    def _reseed(self) -> None:
        """Fresh random streams whenever torch's seed changes (each DataLoader worker, each epoch)."""
        seed = torch.initial_seed()
        if seed != self._seed_key:
            self._seed_key = seed
            self._rng = np.random.default_rng(seed)
            if self._photometric is not None:
                self._photometric.set_random_seed(seed % 2**32)

    def __getitem__(self, index: int) -> dict[str, Tensor] | Skipped:
        self._reseed()
        kinds: list[str] = []
        for _ in range(self.max_retries):
            try:
                raw = self.reader.raw(index)
                params = draw_params(self.augment, self._rng)
                reduction = decode_reduction(self.crop_affine(raw, params))
                image, reduction = read_image(raw.image_path, raw.image_size, raw.ann_id, reduction)
                sample = self.build(raw, image, params, reduction)
                sample["skipped"] = tuple(kinds)
                return sample
            except DataError as error:
                if self.on_bad_sample == "raise":
                    raise
                kinds.append(error.kind)
                if self.augment is None:
                    return Skipped(tuple(kinds))
                index = int(self._rng.integers(len(self)))
        raise DataError(f"{self.reader.source}: {self.max_retries} bad samples in a row, last: {kinds[-1]}")

    def crop_affine(self, raw: RawSample, params: AugmentParams) -> np.ndarray:
        """(2, 3) image -> crop affine of person `raw` under `params` (before any flip)."""
        center, box_wh = padded_box(raw.bbox, self.image_size)
        center = center + np.asarray(params.shift) * box_wh
        return crop_affine(center, box_wh / params.scale, self.image_size, params.rotation)

    def build(self, raw: RawSample, image: np.ndarray, params: AugmentParams, reduction: int = 1) -> dict[str, Tensor]:
        """The sample of person `raw` in `image` (h, w, 3) uint8 RGB, decoded at 1/`reduction` of the
        annotated resolution, under augmentation `params`."""
        out_hw = self.image_size
        _check_box_on_image(raw, (image.shape[0] * reduction, image.shape[1] * reduction))
        affine = self.crop_affine(raw, params)

        crop = warp(image, compose(affine, scale_affine(reduction)), out_hw)
        person_box = box_through(affine, raw.bbox)
        if self.augment is not None and params.occlude:
            crop = occlude(crop, person_box, self.augment, self._rng)
        if self._photometric is not None and params.photometric:
            crop = self._photometric(image=crop)["image"]

        sample = {"image": torch.from_numpy(normalize_image(crop))}
        sample.update(self._masks(raw, affine))
        sample.update(self._dense(raw, affine))
        sample.update(self._keypoints(raw, affine))
        sample.update(self._scene(raw, affine, params))
        sample.update(
            bbox=torch.tensor(person_box, dtype=torch.float32),
            area=torch.tensor(raw.area * affine_scale(affine) ** 2, dtype=torch.float32),
            affine=torch.tensor(invert_affine(affine), dtype=torch.float32),
            image_id=torch.tensor(raw.image_id, dtype=torch.long),
            ann_id=torch.tensor(raw.ann_id, dtype=torch.long),
        )
        surface = None
        if self.surface is not None and raw.dense is not None and raw.dense.offset >= 0:
            surface = self.surface.points(raw.dense.offset, len(raw.dense.x), params.flip)
        if params.flip:
            return flip_sample(sample, self.body, self.face_mappers, self.pelvis, surface)
        return attach_surface_points(sample, self.face_mappers, surface)

    def _masks(self, raw: RawSample, affine: np.ndarray) -> dict[str, Tensor]:
        """Person mask (H, W) float 0/1 and the 14 coarse parts (H, W) long 0..14, in the crop."""
        out_hw = self.image_size
        parts = np.zeros(out_hw, dtype=np.uint8)
        mask = np.zeros(out_hw, dtype=np.uint8)
        has_parts = raw.dp_masks is not None
        has_mask = has_parts or raw.segmentation is not None
        try:
            if has_parts:
                # DensePose's evaluator zooms the 256x256 part masks to the box; we zoom them to the crop.
                grid = part_label_map(raw.dp_masks)
                parts = warp(grid, compose(affine, box_affine(raw.bbox, DP_BOX_SIZE)), out_hw, nearest=True)
                mask = (parts > 0).astype(np.uint8)
            elif isinstance(raw.segmentation, list):
                for polygon in raw.segmentation:
                    xy = apply_affine(affine, np.asarray(polygon, dtype=np.float64).reshape(-1, 2)) - 0.5
                    cv2.fillPoly(mask, [np.round(xy * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            elif raw.segmentation is not None:
                mask = warp(rle_to_mask(raw.segmentation), affine, out_hw, nearest=True)
        except ValueError as exc:
            field = "dp_masks" if has_parts else "segmentation"
            raise DataError.at(raw.source, field, "bad RLE", raw.ann_id, detail=str(exc)) from exc
        return {
            "mask": torch.from_numpy(mask.astype(np.float32)),
            "mask_parts": torch.from_numpy(parts.astype(np.int64)),
            "has_mask": torch.tensor(has_mask),
            "has_mask_parts": torch.tensor(has_parts),
        }

    def _dense(self, raw: RawSample, affine: np.ndarray) -> dict[str, Tensor]:
        """DensePose points in the crop; dp_valid marks those inside it."""
        dense = raw.dense
        if dense is None:
            xy = np.zeros((0, 2))
            part, u, v = torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0)
        else:
            xy = apply_affine(affine, np.stack([dense.x, dense.y], axis=1))
            part, u, v = torch.from_numpy(dense.part), torch.from_numpy(dense.u), torch.from_numpy(dense.v)
        h, w = self.image_size
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        return {
            "dp_xy": torch.from_numpy(xy.astype(np.float32)),
            "dp_I": part.long(),
            "dp_U": u.float(),
            "dp_V": v.float(),
            "dp_valid": torch.from_numpy(inside),
        }

    def _keypoints(self, raw: RawSample, affine: np.ndarray) -> dict[str, Tensor]:
        """COCO-17 keypoints (17, 3): crop px and visibility."""
        kp = np.zeros((17, 3), dtype=np.float32)
        if raw.keypoints is not None:
            kp[:, :2] = apply_affine(affine, raw.keypoints[:, :2].astype(np.float64))
            kp[:, 2] = raw.keypoints[:, 2]
        return {"kp2d": torch.from_numpy(kp), "has_kp2d": torch.tensor(raw.keypoints is not None)}

    def _scene(self, raw: RawSample, affine: np.ndarray, params: AugmentParams) -> dict[str, Tensor]:
        """SMPL parameters, 3D joints and camera in the crop's camera frame (zeros where absent), and the
        GT body's gender."""
        target = self._with_camera(raw)
        if target is None:
            scene = None
        else:
            scene = transform_scene(
                target.pose,
                target.betas,
                target.joints3d,
                target.cam_K,
                target.cam_t,
                affine,
                params.rotation,
                self.pelvis,
            )
        pose = scene.pose if scene is not None and scene.pose is not None else np.zeros(72, np.float32)
        betas = target.betas if target is not None and target.betas is not None else np.zeros(10, np.float32)
        joints = scene.joints3d if scene is not None and scene.joints3d is not None else np.zeros((17, 4))
        has_cam = scene is not None and scene.cam_K is not None and scene.cam_t is not None
        return {
            "global_orient": torch.from_numpy(pose[:3].copy()),
            "body_pose": torch.from_numpy(pose[3:].copy()),
            "betas": torch.from_numpy(np.asarray(betas, dtype=np.float32)),
            "kp3d": torch.from_numpy(np.asarray(joints, dtype=np.float32)),
            "cam_K": torch.tensor(scene.cam_K if has_cam else np.zeros((3, 3)), dtype=torch.float32),
            "cam_t": torch.tensor(scene.cam_t if has_cam else np.zeros(3), dtype=torch.float32),
            "has_smpl": torch.tensor(scene is not None and scene.pose is not None),
            "has_kp3d": torch.tensor(scene is not None and scene.joints3d is not None),
            "has_cam": torch.tensor(has_cam),
            "gender": torch.tensor(target.gender if target is not None else 0, dtype=torch.long),
        }

    def _with_camera(self, raw: RawSample) -> BodyTarget | None:
        """The person's 3D target, its body's translation fitted to the keypoints where the file gave
        SMPL parameters and a camera's intrinsics but no translation (3D joints still relative to the
        pelvis then go to the body's pelvis)."""
        target = raw.body
        if target is None or target.pose is None or target.cam_t is not None or target.cam_K is None:
            return target
        if raw.keypoints is None:
            return target
        if self.camera_fit is None:
            self.camera_fit = BodyCameraFit(self.body)
        fit = self.camera_fit(target.pose, target.betas, raw.keypoints, target.cam_K)
        if fit is None:
            return target
        cam_t, pelvis = fit
        joints = target.joints3d
        if joints is not None and not target.joints3d_in_camera:
            joints = joints.copy()
            joints[:, :3] += (pelvis - joints[0, :3]).astype(np.float32)
        return replace(target, cam_t=cam_t, joints3d=joints, joints3d_in_camera=True)


def _check_box_on_image(raw: RawSample, image_hw: tuple[int, int]) -> None:
    """The person box must overlap its image (checked here for readers whose files give no image size)."""
    x, y, w, h = raw.bbox
    if x >= image_hw[1] or y >= image_hw[0] or x + w <= 0 or y + h <= 0:
        raise DataError.at(raw.source, "bbox", "outside the image", raw.ann_id)
