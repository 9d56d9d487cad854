"""A batched body model taking rotation matrices, for regressors that predict them (PyMAF, DCT).

A thin layer over `smplx.SMPL` (the same file the rest of the code loads): every input is passed
explicitly (smplx's stored default parameters have a fixed batch size), rotations go in as matrices
(`pose2rot=False`), and the joint sets the losses and metrics use are regressed from the vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from densehmr.body.assets import Body
from densehmr.body.smpl_layout import make_smplx

NUM_JOINTS = 24
# H36M-17 pelvis: the root every hip-centred 3D quantity is taken relative to.
H36M_PELVIS = 0


@dataclass
class BodyOutput:
    """Posed bodies in the model frame (metres, y up in the T-pose, before any camera translation).

    vertices: (B, V, 3); joints_smpl24: (B, 24, 3) the kinematic joints; joints_h36m17 (B, 17, 3) and
    joints_coco17 (B, 17, 3) from the body's vertex regressors.
    """

    vertices: Tensor
    joints_smpl24: Tensor
    joints_h36m17: Tensor
    joints_coco17: Tensor


class BodyModel(nn.Module):
    """`body(rotmat (B, 24, 3, 3), betas (B, 10)) -> BodyOutput` for any batch size, on any device.

    The smplx buffers and regressors are non-persistent: they come from the body's files, so
    checkpoints do not carry them (and stay small: the pose blend shapes alone are V x 621 floats).
    """

    def __init__(self, body: Body, num_betas: int = 10) -> None:
        super().__init__()
        smpl = make_smplx(body.model_file, body.vertex_ids, num_betas=num_betas)
        for name in ("betas", "global_orient", "body_pose", "transl"):
            # smplx's learnable defaults have a fixed batch size and would reach the optimizer (and DDP).
            if hasattr(smpl, name):
                delattr(smpl, name)
        for module in smpl.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer, persistent=False)
        self.smpl = smpl
        self.num_betas = num_betas
        self.register_buffer("reg_h36m17", body.regressors["h36m17"].float(), persistent=False)
        self.register_buffer("reg_coco17", body.regressors["coco17"].float(), persistent=False)

    def forward(self, rotmat: Tensor, betas: Tensor) -> BodyOutput:
        """rotmat (B, 24, 3, 3) joint rotations (global orient first), betas (B, num_betas); float32 outputs
        whatever the autocast around the call."""
        dtype = self.reg_h36m17.dtype
        # Under bf16 autocast the blend shapes and skinning would run in bfloat16: 3 mm mean, 15 mm worst
        # vertex error on synthetic people, a floor under every 3D loss and metric.
        with torch.autocast(device_type=rotmat.device.type, enabled=False):
            out = self.smpl(
                betas=betas.to(dtype),
                global_orient=rotmat[:, :1].to(dtype),
                body_pose=rotmat[:, 1:].to(dtype),
                pose2rot=False,
            )
            verts = out.vertices
            return BodyOutput(
                vertices=verts,
                joints_smpl24=out.joints[:, :NUM_JOINTS],
                joints_h36m17=self.regress(verts, "h36m17"),
                joints_coco17=self.regress(verts, "coco17"),
            )

    def regress(self, vertices: Tensor, name: str) -> Tensor:
        """Joints (B, J, 3) of vertices (B, V, 3) by the body regressor `name` ('h36m17' or 'coco17')."""
        return torch.einsum("jv,bvc->bjc", getattr(self, f"reg_{name}"), vertices)
