"""What the body-parameter regressors (PyMAF, DCT) share: the crop camera, the parametric loss terms,
the prediction from an estimate and its pictures.

An estimate is a dict with `rotmat` (B, 24, 3, 3), `betas` (B, 10), `cam` (B, 3) weak perspective
(s, tx, ty) of the crop, `verts` (B, V, 3) model frame metres and `joints_h36m17` / `joints_coco17`
(B, 17, 3) model frame metres. A subclass says how its keypoint terms are normalized (`kp2d_norm`,
`kp2d_reduction`, `kp3d_root`: its paper's trainer) and adds its own terms.

How the body meets the image (`projection`): "weak_perspective", the papers' (x = s (X + tx), every point at
the body's depth), or "perspective": the crop's own pinhole camera (the sample's intrinsics, else a centred
one of focal `default_focal`) with the translation that reproduces `cam` at the body's depth (CLIFF's
remedy). Both agree on the plane of the model's origin; perspective also foreshortens what lies in front of
or behind it, as a camera at 2 crop sizes' focal does by a few pixels. The 2D terms, the prediction's
keypoints and its rendered DensePose use it; PyMAF's feature sampling stays weak perspective (the network
sees no intrinsics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from densehmr.geometry.rotations import axis_angle_to_rotmat
from densehmr.losses.hmr import Norm, Reduction, betas_loss, keypoint_2d_loss, keypoint_3d_loss, rotation_matrix_loss
from densehmr.methods.base import PICTURE_SAMPLES, BaseMethod, Prediction, Targets
from densehmr.metrics.densepose_ap import GT_MASK
from densehmr.render import PerspectiveCamera, screen_to_iuv, weak_perspective_to_screen
from densehmr.render.cameras import crop_intrinsics, crop_translation
from densehmr.viz.iuv import denormalize_image, iuv_to_rgb, side_by_side
from densehmr.viz.mesh_overlay import mesh_overlay


@dataclass
class HMRTargets(Targets):
    """`Targets` with the GT pose as rotation matrices."""

    rotmat: Tensor | None  # (B, 24, 3, 3) of the SMPL-format pose; None without one


PROJECTIONS = ("weak_perspective", "perspective")
# Nearest camera depth (metres) a perspective projection divides by: an estimate that puts part of the body
# at or behind the camera gets large but finite pixels instead of inf.
MIN_DEPTH_M = 0.05


class HMRMethod(BaseMethod):
    """A method whose output is an estimate of the body's parameters and a weak-perspective camera."""

    default_densepose_protocol = GT_MASK  # its DensePose is its mesh, rendered: MeshPose's protocol
    # Set by each subclass: the keypoint terms' normalization of its paper's trainer (densehmr.losses.hmr).
    kp2d_norm: Norm
    kp2d_reduction: Reduction
    kp3d_root: int | tuple[int, ...]

    def __init__(self, default_focal: float, projection: str, **base) -> None:
        """default_focal: focal in crop sizes where a sample has no camera; projection: one of PROJECTIONS
        (module docstring); base: BaseMethod's arguments."""
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        super().__init__(**base)
        self.default_focal = default_focal * max(self.image_size)
        self.projection = projection
        self.register_buffer("faces", self.body.faces.long().clone(), persistent=False)

    # ----------------------------------------------------------------- losses
    def targets(self, batch: dict) -> HMRTargets:
        rotmat = None
        if "body_pose" in batch:
            pose = torch.cat([batch["global_orient"], batch["body_pose"]], 1).float()
            rotmat = axis_angle_to_rotmat(pose.view(-1, 24, 3))
        return HMRTargets(verts=self.gt_vertices(batch), rotmat=rotmat)

    def parametric_terms(self, est: dict, batch: dict, targets: HMRTargets) -> dict[str, Tensor]:
        """The active ones of `kp2d` (COCO-17 in the crop's [-1, 1] frame), `kp3d` (root-centred H36M-17,
        metres), `pose` (rotation matrices) and `betas` of one estimate."""
        terms: dict[str, Tensor] = {}
        if self.active("kp2d"):
            weight = (batch["kp2d"][..., 2] > 0) & batch["has_kp2d"][:, None]
            kp2d = self.project(est["joints_coco17"], est["cam"], batch)
            terms["kp2d"] = keypoint_2d_loss(
                kp2d, batch["kp2d"][..., :2], weight, scale=self.image_size[1] / 2.0, norm=self.kp2d_norm,
                reduction=self.kp2d_reduction,
            )
        if self.active("kp3d"):
            weight = batch["kp3d"][..., 3] * batch["has_kp3d"][:, None]
            terms["kp3d"] = keypoint_3d_loss(est["joints_h36m17"], batch["kp3d"][..., :3], weight, root=self.kp3d_root)
        if self.active("pose"):
            terms["pose"] = rotation_matrix_loss(est["rotmat"], targets.rotmat, batch["has_smpl"])
        if self.active("betas"):
            terms["betas"] = betas_loss(est["betas"], batch["betas"], batch["has_smpl"])
        return terms

    # ----------------------------------------------------------------- cameras
    def project(self, points: Tensor, cam: Tensor, batch: dict) -> Tensor:
        """Crop px (B, N, 2) of model-frame points (B, N, 3) metres under the estimate's cam (B, 3), by
        `projection`."""
        return self.to_screen(points, cam, batch)[..., :2]

    def to_screen(self, points: Tensor, cam: Tensor, batch: dict) -> Tensor:
        """Screen vertices (B, N, 3) for rasterizing: crop px and a depth that grows away from the camera."""
        if self.projection == "weak_perspective":
            return weak_perspective_to_screen(points, cam, self.image_size[1])
        focal, principal = self.crop_camera(batch)
        camera_frame = points + crop_translation(cam, focal, principal, self.image_size)[:, None]
        depth = camera_frame[..., 2:].clamp(min=MIN_DEPTH_M)
        return PerspectiveCamera(focal, principal).to_screen(torch.cat([camera_frame[..., :2], depth], -1))

    def crop_camera(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Focal (B, 2) and principal point (B, 2) crop px of each crop's camera: the sample's own, else a
        centred one of focal `default_focal`."""
        focal, principal, _ = crop_intrinsics(batch["cam_K"], self.image_size, self.default_focal, batch.get("has_cam"))
        return focal, principal

    def camera_translation(self, cam: Tensor, batch: dict) -> Tensor:
        """Translation (B, 3) metres that makes each crop's camera (`crop_camera`) reproduce the weak
        perspective cam (B, 3) at the body's depth (the principal point may be off the crop centre)."""
        return crop_translation(cam, *self.crop_camera(batch), self.image_size)

    def predict(self, out: dict, batch: dict, targets: Targets | None = None) -> Prediction:
        """`verts` the estimate's mesh in the camera frame, `kp2d` its projected COCO-17 (score 1), `iuv` the
        mesh rendered under the `projection` and `mask` its silhouette."""
        verts, cam = out["verts"], out["cam"]
        iuv = screen_to_iuv(self.to_screen(verts, cam, batch), self.body.charts, self.image_size)
        kp2d = self.project(out["joints_coco17"], cam, batch)
        return Prediction(
            iuv=iuv,
            mask=(iuv[:, 0] > 0).to(iuv.dtype),
            verts=verts + self.camera_translation(cam, batch)[:, None],
            kp2d=torch.cat([kp2d, torch.ones_like(kp2d[..., :1])], -1),
        )

    # ----------------------------------------------------------------- pictures
    def input_maps(self, batch: dict, targets: Targets) -> list[Tensor]:
        """IUV maps (B, 3, H, W) the network input holds besides the image, for pictures (none here)."""
        return []

    @torch.no_grad()
    def pictures(self, out: dict, batch: dict, pred: Prediction, targets: Targets) -> dict[str, np.ndarray]:
        """A row per sample: the image, the GT IUV (rendered GT mesh, else the annotated points), the
        input's IUV maps, the predicted IUV and the predicted mesh over the image."""
        n = min(PICTURE_SAMPLES, batch["image"].shape[0])
        gt = self.picture_gt_iuv(batch, targets, n)
        inputs = self.input_maps(batch, targets)
        cameras = {key: value[:n] for key, value in batch.items() if key in ("cam_K", "has_cam")}
        screens = self.to_screen(out["verts"][:n].float(), out["cam"][:n].float(), cameras)
        rows = []
        for i in range(n):
            image = denormalize_image(batch["image"][i, :3])
            panels = [image, iuv_to_rgb(gt[i]), *(iuv_to_rgb(m[i]) for m in inputs), iuv_to_rgb(pred.iuv[i])]
            rows.append(side_by_side([*panels, mesh_overlay(image, screens[i], self.faces)]))
        return {"iuv_mesh": np.concatenate(rows, axis=0)}
