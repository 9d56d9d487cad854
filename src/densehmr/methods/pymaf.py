"""PyMAF: body parameters regressed, then corrected twice by features sampled where the mesh projects.

Loss terms (config `loss_weights`; PyMAF's weights, each summed over the three steps): `kp2d` (MSE
of COCO-17 keypoints in the crop's [-1, 1] frame), `kp3d` (MSE of hip-centred H36M-17 joints, metres),
`pose` (MSE of the 24 rotation matrices), `betas` (MSE), `cam` (PyMAF's regulariser of the camera
scale, mean exp(-10 s)^2), and `aux_iuv` (the auxiliary IUV maps against IUV rendered from the GT
mesh, scaled as PyMAF's trainer scales them (`densehmr.losses.iuv_maps`): part CE x aux_part_weight +
coarse-part CE x aux_coarse_weight + the U, V smooth-L1 summed over the map's pixels per sample x
aux_uv_weight; only with pymaf.aux_iuv=true).
Options: `feedback` mesh_aligned | grid | global (PyMAF's Table 4), `aux_iuv`, `pyramid` deconv | backbone.

Predictions: `verts` the last step's mesh in the camera frame (the weak-perspective camera turned into
a translation with the crop's focal length from cam_K), `kp2d` its COCO-17 keypoints projected by the
weak-perspective camera, and `iuv` the same mesh rendered under that camera with the body's charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from densehmr.body.assets import FINE_TO_MASK14
from densehmr.body.body_model import BodyModel
from densehmr.body.mean_params import load_mean_params
from densehmr.geometry.rotations import axis_angle_to_rotmat
from densehmr.losses.hmr import (
    betas_loss,
    camera_scale_penalty,
    keypoint_2d_loss,
    keypoint_3d_loss,
    rotation_matrix_loss,
)
from densehmr.losses.iuv_maps import iuv_map_losses
from densehmr.methods.base import BaseMethod, Prediction
from densehmr.metrics.densepose_ap import GT_MASK
from densehmr.nn.backbones import build_backbone
from densehmr.nn.heads.pymaf_head import PyMAFHead
from densehmr.render import (
    gt_mesh_iuv,
    screen_to_iuv,
    weak_perspective_to_screen,
)
from densehmr.render.cameras import crop_intrinsics, crop_translation
from densehmr.viz.iuv import denormalize_image, iuv_to_rgb, points_to_iuv, side_by_side
from densehmr.viz.mesh_overlay import mesh_overlay

# H36M-17 right and left hips: 3D joints are centred on their midpoint (PyMAF, SPIN).
H36M_HIPS = (1, 4)
PICTURE_SAMPLES = 4


class PyMAF(BaseMethod):
    """PyMAF on person crops, with the body given by config (open body or SMPL)."""

    name = "pymaf"
    default_densepose_protocol = GT_MASK  # its DensePose is its mesh, rendered: MeshPose's protocol

    def __init__(
        self,
        body: Mapping | None = None,
        backbone: Mapping | None = None,
        image_size: tuple[int, int] = (128, 128),
        loss_weights: Mapping[str, float] | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        feedback: str = "mesh_aligned",
        aux_iuv: bool = True,
        pyramid: str = "deconv",
        grid_size: int = 21,
        mesh_level: int = 1,
        channels: int = 256,
        mlp_dims: Sequence[int] = (128, 64, 5),
        hidden: int = 1024,
        dropout: float = 0.5,
        mean_params: str | None = None,
        aux_part_weight: float = 1.0,
        aux_coarse_weight: float = 1.0,
        aux_uv_weight: float = 0.5,
        default_focal: float = 2.0,
        log_images_every_n_steps: int = 200,
        densepose_kappa: str = "per_part",
        densepose_protocol: str | None = None,
    ) -> None:
        super().__init__(
            body=body, loss_weights=loss_weights, optimizer=optimizer, scheduler=scheduler,
            image_size=image_size, log_images_every_n_steps=log_images_every_n_steps,
            densepose_kappa=densepose_kappa, densepose_protocol=densepose_protocol,
        )
        self.save_hyperparameters()
        # Without a weight the IUV head would be trained by nothing (and DDP rejects unused parameters).
        self.aux_iuv = aux_iuv and self.active("aux_iuv")
        self.aux_weights = {"part": aux_part_weight, "coarse": aux_coarse_weight, "uv": aux_uv_weight}
        self.default_focal = default_focal * max(self.image_size)
        backbone_cfg = dict(backbone or {"name": "resnet18"})
        self.backbone = build_backbone(backbone_cfg.pop("name"), **backbone_cfg)
        self.head = PyMAFHead(
            self.backbone.out_channels, self.backbone.out_strides, BodyModel(self.body),
            load_mean_params(self.body, mean_params), self.body.downsample[mesh_level], self.image_size,
            feedback=feedback, pyramid=pyramid, aux_iuv=self.aux_iuv, grid_size=grid_size, channels=channels,
            mlp_dims=tuple(mlp_dims), hidden=hidden, dropout=dropout,
        )
        self.register_buffer("faces", self.body.faces.long().clone(), persistent=False)
        self.register_buffer("fine_to_mask14", torch.tensor(FINE_TO_MASK14), persistent=False)

    def forward(self, image: Tensor) -> dict:
        """image (B, 3, H, W) -> PyMAFHead's outputs (steps, points, iuv and the last step's estimate)."""
        return self.head(self.backbone(image))

    # ----------------------------------------------------------------- losses
    def loss_terms(self, out: dict, batch: dict) -> dict[str, Tensor]:
        size = float(self.image_size[1])
        has_smpl = batch["has_smpl"]
        kp2d_weight = (batch["kp2d"][..., 2] > 0) & batch["has_kp2d"][:, None]
        kp3d_weight = batch["kp3d"][..., 3] * batch["has_kp3d"][:, None]
        gt_rotmat = None
        if self.active("pose"):
            pose = torch.cat([batch["global_orient"], batch["body_pose"]], dim=1).float()
            gt_rotmat = axis_angle_to_rotmat(pose.view(-1, 24, 3))
        terms: dict[str, list[Tensor]] = {}
        for step in out["steps"]:
            if self.active("kp2d"):
                terms.setdefault("kp2d", []).append(
                    keypoint_2d_loss(step["kp2d"], batch["kp2d"][..., :2], kp2d_weight, scale=size / 2, norm="l2")
                )
            if self.active("kp3d"):
                terms.setdefault("kp3d", []).append(
                    keypoint_3d_loss(step["joints_h36m17"], batch["kp3d"][..., :3], kp3d_weight, root=H36M_HIPS)
                )
            if self.active("pose"):
                terms.setdefault("pose", []).append(rotation_matrix_loss(step["rotmat"], gt_rotmat, has_smpl))
            if self.active("betas"):
                terms.setdefault("betas", []).append(betas_loss(step["betas"], batch["betas"], has_smpl))
            if self.active("cam"):
                terms.setdefault("cam", []).append(camera_scale_penalty(step["cam"]))
        summed = {k: torch.stack(v).sum() for k, v in terms.items()}
        if self.aux_iuv:
            summed["aux_iuv"] = self.aux_iuv_loss(out["iuv"], batch)
        return summed

    def gt_iuv(self, batch: dict, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """IUV (B, 3, h, w) of the GT meshes on an (h, w) grid over the crop; which samples (B,) have one."""
        return gt_mesh_iuv(batch, self.body.charts, self.image_size, size)

    def aux_iuv_loss(self, maps: dict[str, Tensor], batch: dict) -> Tensor:
        """PyMAF's auxiliary DensePose loss on the IUV maps (B, c, h, w) against the rendered GT."""
        iuv, keep = self.gt_iuv(batch, tuple(maps["part"].shape[-2:]))
        terms = iuv_map_losses(maps["part"], maps["coarse"], maps["u"], maps["v"], iuv, keep, self.fine_to_mask14)
        return sum(self.aux_weights[k] * v for k, v in terms.items())

    # ----------------------------------------------------------------- predictions
    def focal_principal(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(B, 2) focal and principal point, crop px: the sample's camera, or a default one centred."""
        focal, principal, _ = crop_intrinsics(batch["cam_K"], self.image_size, self.default_focal, batch.get("has_cam"))
        return focal, principal

    def camera_translation(self, cam: Tensor, batch: dict) -> Tensor:
        """Translation (B, 3) metres that makes the perspective camera of each crop reproduce the weak
        perspective cam (B, 3) at the body's depth (the principal point may be off the crop centre)."""
        focal, principal = self.focal_principal(batch)
        return crop_translation(cam, focal, principal, self.image_size)

    def predict(self, out: dict, batch: dict) -> Prediction:
        verts, cam = out["verts"], out["cam"]
        kp2d = torch.cat([out["kp2d"], torch.ones_like(out["kp2d"][..., :1])], dim=-1)
        screen = weak_perspective_to_screen(verts, cam, self.image_size[1])
        iuv = screen_to_iuv(screen, self.body.charts, self.image_size)
        return Prediction(
            iuv=iuv,
            mask=(iuv[:, 0] > 0).to(iuv.dtype),  # the mesh's silhouette
            verts=verts + self.camera_translation(cam, batch)[:, None],
            kp2d=kp2d,
        )

    # ----------------------------------------------------------------- pictures
    @torch.no_grad()
    def pictures(self, out: dict, batch: dict, pred: Prediction) -> dict[str, np.ndarray]:
        """A row per sample: the image, the GT IUV (rendered GT mesh, else the annotated points), the
        predicted IUV and the predicted mesh over the image."""
        n = min(PICTURE_SAMPLES, batch["image"].shape[0])
        size = self.image_size
        if "verts" in batch:
            gt, rendered = self.gt_iuv(batch, size)
        else:
            gt, rendered = torch.zeros_like(pred.iuv), torch.zeros_like(batch["has_smpl"])
        rows = []
        for i in range(n):
            image = denormalize_image(batch["image"][i])
            if not bool(rendered[i]):
                valid = batch["dp_valid"][i]
                gt[i] = points_to_iuv(
                    batch["dp_xy"][i][valid], batch["dp_I"][i][valid], batch["dp_U"][i][valid],
                    batch["dp_V"][i][valid], size,
                ).to(gt)
            screen = weak_perspective_to_screen(out["verts"][i : i + 1].float(), out["cam"][i : i + 1].float(), size[1])
            overlay = mesh_overlay(image, screen[0], self.faces)
            rows.append(side_by_side([image, iuv_to_rgb(gt[i]), iuv_to_rgb(pred.iuv[i]), overlay]))
        return {"iuv_mesh": np.concatenate(rows, axis=0)}
