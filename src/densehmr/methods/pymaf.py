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
a translation with the crop's focal length from cam_K), `kp2d` its COCO-17 keypoints projected and `iuv`
the same mesh rendered with the body's charts, both under the option `projection` (`hmr_base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from densehmr.body.assets import FINE_TO_MASK14
from densehmr.body.body_model import BodyModel
from densehmr.body.mean_params import load_mean_params
from densehmr.losses.hmr import camera_scale_penalty
from densehmr.losses.iuv_maps import iuv_map_losses
from densehmr.methods.hmr_base import HMRMethod, HMRTargets
from densehmr.nn.backbones import build_backbone
from densehmr.nn.heads.pymaf_head import PyMAFHead

# H36M-17 right and left hips: 3D joints are centred on their midpoint (PyMAF, SPIN).
H36M_HIPS = (1, 4)


class PyMAF(HMRMethod):
    """PyMAF on person crops, with the body given by config (open body or SMPL)."""

    name = "pymaf"
    kp2d_norm = "l2"
    kp2d_reduction = "pooled"
    kp3d_root = H36M_HIPS

    def __init__(
        self,
        backbone: Mapping,
        *,
        feedback: str, grid_size: int, mesh_level: int,  # which features each step reads
        pyramid: str, channels: int, mlp_dims: Sequence[int],  # the feature pyramid and point MLP
        hidden: int, dropout: float, mean_params: str | None,  # the regressors
        aux_iuv: bool, aux_part_weight: float, aux_coarse_weight: float, aux_uv_weight: float,
        **base,
    ) -> None:
        """backbone: the backbone group's node; the options: configs/method/pymaf.yaml's `pymaf` node; base:
        HMRMethod's and BaseMethod's arguments."""
        super().__init__(**base)
        self.save_hyperparameters()
        # Without a weight the IUV head would be trained by nothing (and DDP rejects unused parameters).
        self.aux_iuv = aux_iuv and self.active("aux_iuv")
        self.aux_weights = {"part": aux_part_weight, "coarse": aux_coarse_weight, "uv": aux_uv_weight}
        self.backbone = build_backbone(**backbone)
        self.head = PyMAFHead(
            self.backbone.out_channels, self.backbone.out_strides, BodyModel(self.body),
            load_mean_params(self.body, mean_params), self.body.downsample[mesh_level], self.image_size,
            feedback=feedback, pyramid=pyramid, aux_iuv=self.aux_iuv, grid_size=grid_size, channels=channels,
            mlp_dims=tuple(mlp_dims), hidden=hidden, dropout=dropout,
        )
        self.register_buffer("fine_to_mask14", torch.tensor(FINE_TO_MASK14), persistent=False)

    def forward(self, image: Tensor) -> dict:
        """image (B, 3, H, W) -> PyMAFHead's outputs (steps, points, iuv and the last step's estimate)."""
        return self.head(self.backbone(image))

    # ----------------------------------------------------------------- losses
    def loss_terms(self, out: dict, batch: dict, targets: HMRTargets) -> dict[str, Tensor]:
        terms: dict[str, list[Tensor]] = {}
        for step in out["steps"]:
            step_terms = self.parametric_terms(step, batch, targets)
            if self.active("cam"):
                step_terms["cam"] = camera_scale_penalty(step["cam"])
            for k, v in step_terms.items():
                terms.setdefault(k, []).append(v)
        summed = {k: torch.stack(v).sum() for k, v in terms.items()}
        if self.aux_iuv:
            summed["aux_iuv"] = self.aux_iuv_loss(out["iuv"], batch, targets)
        return summed

    def aux_iuv_loss(self, maps: dict[str, Tensor], batch: dict, targets: HMRTargets) -> Tensor:
        """PyMAF's auxiliary DensePose loss on the IUV maps (B, c, h, w) against the rendered GT."""
        iuv, keep = self.gt_iuv(batch, targets, tuple(maps["part"].shape[-2:]))
        terms = iuv_map_losses(maps["part"], maps["coarse"], maps["u"], maps["v"], iuv, keep, self.fine_to_mask14)
        return sum(self.aux_weights[k] * v for k, v in terms.items())
