"""DCT (Rong et al., ICCV 2019): an HMR regressor supervised by dense DensePose correspondences.

Network: backbone -> global average pool of its stride-32 map -> HMR's iterative error feedback
(3 iterations from the body's mean parameters) -> pose (24 rotations, 6D), betas, weak-perspective
camera (s, tx, ty) of the crop -> the body through the shared `BodyModel`.

Loss terms (config `loss_weights`; DCT's weights): `kp2d` (L1 of COCO-17 keypoints in the crop's
[-1, 1] frame, visibility-weighted), `kp3d` (MSE of pelvis-centred H36M-17 joints, metres), `pose`
(MSE of the 24 rotation matrices), `betas` (MSE), and `dense` (L1 of each DensePose point against
its surface point, sum_k bary_k pi(V[vert_k]) on the full mesh, in the same [-1, 1] frame). `kp2d`
and `dense` are normalized as DCT's trainer does: a mean over each person's annotated points, then
over the persons. The dense weight is the option `dct.dense_weight`, not a `loss_weights` entry: 0 is
the "no dense supervision" row, removed by the base's weighting.

Option `iuv_input`: a second backbone reads an IUV map of the person (encoded as 2 (I/24, U, V) - 1,
background -1) and its pooled features join the image's. The map is rendered from the GT mesh with
the sample's camera where a sample has one in training; elsewhere, and at validation and test, it is
the prediction of the DenseReg checkpoint `iuv_checkpoint`. Without a checkpoint the GT rendering is
used everywhere (an oracle: say so next to the numbers), and samples without a GT mesh get an empty map.
The network input is then the image with the encoded map stacked on its channels (B, 6, H, W), which
`network_input` builds, so `forward` stays a function of one tensor.

Predictions (as PyMAF's): `verts` the mesh in the camera frame (the weak-perspective camera turned
into a translation with the crop's focal length from cam_K), `kp2d` its COCO-17 keypoints projected and
`iuv` the same mesh rendered with the body's charts, both under the option `projection` (`hmr_base`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

from densehmr.body.assets import NUM_PARTS
from densehmr.body.body_model import H36M_PELVIS, BodyModel
from densehmr.body.mean_params import load_mean_params
from densehmr.losses.dense_correspondence import dense_keypoint_l1
from densehmr.methods.base import Targets
from densehmr.methods.hmr_base import HMRMethod, HMRTargets
from densehmr.nn.backbones import build_backbone
from densehmr.nn.heads.hmr_regressor import HMRRegressor

IMAGE_CHANNELS = 3


def encode_iuv(iuv: Tensor) -> Tensor:
    """Network input (B, 3, H, W) in [-1, 1] of IUV maps (B, 3, H, W) (I 0..24, U, V in [0, 1])."""
    scale = iuv.new_tensor([1.0 / NUM_PARTS, 1.0, 1.0])[:, None, None]
    return 2.0 * iuv * scale - 1.0


class DCT(HMRMethod):
    """DCT on square person crops, with the body given by config (open body or SMPL)."""

    name = "dct"
    kp2d_norm = "l1"
    kp2d_reduction = "per_sample"
    kp3d_root = H36M_PELVIS

    def __init__(
        self,
        backbone: Mapping,
        *,
        dense_weight: float, loss_weights: Mapping[str, float],
        iuv_input: bool, iuv_checkpoint: str | None, iuv_backbone: str | None,  # the IUV branch
        iterations: int, hidden: int, dropout: float, mean_params: str | None,  # the regressor
        **base,
    ) -> None:
        """backbone: the backbone group's node; the options: configs/method/dct.yaml's `dct` node; base:
        HMRMethod's and BaseMethod's arguments. The dense term's weight is dense_weight."""
        if "dense" in loss_weights:
            raise ValueError("the dense loss weight is the option dct.dense_weight, not loss_weights.dense")
        super().__init__(loss_weights={**loss_weights, "dense": dense_weight}, **base)
        if self.image_size[0] != self.image_size[1]:
            raise ValueError(f"DCT's weak perspective needs square crops, got image_size {self.image_size}")
        if iuv_checkpoint is not None and not iuv_input:
            raise ValueError("dct.iuv_checkpoint is only used with dct.iuv_input=true")
        self.save_hyperparameters()
        self.iuv_input = iuv_input

        self.backbone = build_backbone(**backbone)
        features = self.backbone.out_channels[-1]
        if iuv_input:
            # IUV maps are not photographs: this branch starts from scratch, never from ImageNet weights.
            self.iuv_backbone = build_backbone(iuv_backbone or backbone["name"])
            features += self.iuv_backbone.out_channels[-1]
        self.regressor = HMRRegressor(
            features, load_mean_params(self.body, mean_params), hidden=hidden, dropout=dropout,
            iterations=iterations,
        )
        self.body_model = BodyModel(self.body)
        # Frozen and outside the module tree: neither trained, nor saved in DCT's checkpoints.
        self._densereg = (self._load_densereg(iuv_checkpoint),) if iuv_checkpoint is not None else ()
        self._warned_oracle = False

    @staticmethod
    def _load_densereg(path: str) -> torch.nn.Module:
        """The DenseReg whose IUV maps DCT reads at evaluation, from a verified checkpoint (whole, finite)."""
        from densehmr.checkpoints import CheckpointError, load_checkpoint
        from densehmr.methods.densereg import DenseReg

        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            raise ValueError(f"dct.iuv_checkpoint: {exc}") from exc
        model = DenseReg(**state["hyper_parameters"])
        model.load_state_dict(state["state_dict"])
        return model.eval().requires_grad_(False)

    # ----------------------------------------------------------------- network
    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """image (B, 3, H, W), or (B, 6, H, W) with the encoded IUV map when iuv_input, ->
        pose6d (B, 144), rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3), verts (B, V, 3) model frame
        metres, joints_h36m17 / joints_coco17 (B, 17, 3) model frame."""
        features = self.backbone(image[:, :IMAGE_CHANNELS])[-1].mean((2, 3))
        if self.iuv_input:
            iuv_features = self.iuv_backbone(image[:, IMAGE_CHANNELS:])[-1].mean((2, 3))
            features = torch.cat([features, iuv_features], 1)
        est = self.regressor(features)
        rotmat = est.rotmat
        posed = self.body_model(rotmat, est.betas)
        return {
            "pose6d": est.pose6d,
            "rotmat": rotmat,
            "betas": est.betas,
            "cam": est.cam,
            "verts": posed.vertices,
            "joints_h36m17": posed.joints_h36m17,
            "joints_coco17": posed.joints_coco17,
        }

    # ----------------------------------------------------------------- IUV input
    def network_input(self, batch: dict, targets: Targets | None) -> Tensor:
        """The image, with (iuv_input) the encoded IUV map stacked onto its channels: (B, 3 or 6, H, W)."""
        if not self.iuv_input:
            return batch["image"]
        return torch.cat([batch["image"], encode_iuv(self.input_iuv(batch, targets))], 1)

    def input_iuv(self, batch: dict, targets: Targets | None) -> Tensor:
        """IUV maps (B, 3, H, W) for the IUV branch (module docstring: which source when); the GT rendering
        needs targets (None on photographs)."""
        image = batch["image"]
        iuv = torch.zeros_like(image)
        rendered = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
        if self.training or not self._densereg:
            if not self.training and not self._warned_oracle:
                warnings.warn(
                    "DCT evaluates with IUV rendered from the GT mesh (no dct.iuv_checkpoint): an oracle", stacklevel=2
                )
                self._warned_oracle = True
            if targets is not None and targets.verts is not None:
                iuv, rendered = self.gt_iuv(batch, targets, self.image_size)
        if self._densereg and not bool(rendered.all()):
            densereg = self._densereg[0].to(image.device)
            with torch.no_grad():
                predicted = densereg.predict(densereg(image), {"image": image}).iuv
            iuv = torch.where(rendered[:, None, None, None], iuv, predicted.to(iuv))
        return iuv

    # ----------------------------------------------------------------- losses
    def loss_terms(self, out: dict, batch: dict, targets: HMRTargets) -> dict[str, Tensor]:
        terms = self.parametric_terms(out, batch, targets)
        if self.active("dense"):
            verts_2d = self.project(out["verts"], out["cam"], batch)
            valid = batch["dp_valid"] & batch["has_dp"][:, None]
            terms["dense"] = dense_keypoint_l1(
                verts_2d, self.faces, batch["dp_face"], batch["dp_bary"], batch["dp_xy"], valid,
                scale=self.image_size[1] / 2.0,
            )
        return terms

    # ----------------------------------------------------------------- pictures
    def input_maps(self, batch: dict, targets: Targets) -> list[Tensor]:
        """The IUV map the IUV branch read (iuv_input), made again for the picture."""
        return [self.input_iuv(batch, targets)] if self.iuv_input else []
