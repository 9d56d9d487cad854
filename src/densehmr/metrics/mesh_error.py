"""3D errors of a body estimate: MPJPE, PA-MPJPE and PVE in millimetres (SPIN/PyMAF protocol)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from densehmr.body.assets import H36M_TO_LSP14

# LSP-14 right and left hip (VIBE's pelvis is their midpoint).
_LSP14_HIPS = (2, 3)
_H36M_PELVIS = 0
_MM = 1000.0


def similarity_align(source: Tensor, target: Tensor) -> Tensor:
    """Procrustes with scale: the rotation (no reflection), scale and translation that best map
    source onto target in least squares, applied to source. (B, J, 3) -> (B, J, 3), float64 inside."""
    src, tgt = source.double(), target.double()
    mu_s, mu_t = src.mean(1, keepdim=True), tgt.mean(1, keepdim=True)
    xs, xt = src - mu_s, tgt - mu_t
    cov = xs.transpose(1, 2) @ xt  # (B, 3, 3)
    u, _, vh = torch.linalg.svd(cov)
    # Flip the least singular direction when the best orthogonal map would be a reflection.
    sign = torch.sign(torch.linalg.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    rot = vh.transpose(1, 2) @ fix @ u.transpose(1, 2)  # maps centred source onto centred target
    # A collapsed source (all joints at one point) is best mapped to the target's centroid: scale 0, not 0/0.
    spread = (xs**2).sum((1, 2))
    scale = torch.where(spread > 0, (rot @ cov).diagonal(dim1=1, dim2=2).sum(-1) / spread.clamp(min=1e-300), 0.0)
    aligned = scale[:, None, None] * xs @ rot.transpose(1, 2) + mu_t
    return aligned.to(source.dtype)


class MeshError(Metric):
    """MPJPE, PA-MPJPE and PVE (mm) on the LSP-14 joints of the H36M regressor.

    Joints: the H36M-17 joints (regressed from vertices, or given, e.g. motion-capture GT) mapped to
    LSP-14, each skeleton centred on its own root: the regressed pelvis (root="pelvis", SPIN/PyMAF)
    or the midpoint of the LSP-14 hips (root="hips", VIBE). PA-MPJPE aligns by a similarity
    (rotation without reflection, scale, translation). PVE is unaligned: the mean vertex distance
    after the same root centring, no rotation or scale. `protocol` names this choice for logs.

    h36m_regressor: (17, V) regressor from mesh vertices to H36M-17 joints (None: joints only).
    compute() returns {"mpjpe", "pa_mpjpe", "pve"} (nan where nothing was measured).
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(
        self, h36m_regressor: Tensor | None, root: Literal["pelvis", "hips"] = "pelvis", **kwargs
    ) -> None:
        if root not in ("pelvis", "hips"):
            raise ValueError(f"root must be 'pelvis' or 'hips', got {root!r}")
        super().__init__(**kwargs)
        self.root = root
        self.register_buffer("regressor", h36m_regressor, persistent=False)
        self.register_buffer("lsp14", torch.tensor(H36M_TO_LSP14, dtype=torch.long), persistent=False)
        for name in ("mpjpe_sum", "pa_mpjpe_sum", "pve_sum"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("joint_count", "vertex_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @property
    def protocol(self) -> str:
        return f"lsp14/h36m-regressor/{self.root}"

    def _joints(self, verts: Tensor | None, joints: Tensor | None) -> tuple[Tensor, Tensor]:
        """LSP-14 joints (B, 14, 3) centred on the root, and the root (B, 1, 3)."""
        if joints is None and self.regressor is None:
            raise ValueError("MeshError without a regressor needs joints, not vertices")
        h36m = joints if joints is not None else torch.einsum("jv,bvc->bjc", self.regressor.to(verts), verts)
        lsp = h36m[:, self.lsp14]
        if self.root == "pelvis":
            root = h36m[:, [_H36M_PELVIS]]
        else:
            root = lsp[:, list(_LSP14_HIPS)].mean(1, keepdim=True)
        return lsp - root, root

    def update(
        self,
        pred_verts: Tensor | None = None,
        gt_verts: Tensor | None = None,
        pred_joints: Tensor | None = None,
        gt_joints: Tensor | None = None,
    ) -> None:
        """Vertices (B, V, 3) and/or H36M-17 joints (B, 17, 3), metres, any common frame.

        Each side needs vertices or joints (joints win for the joint errors); PVE needs both vertices.
        """
        if (pred_verts is None and pred_joints is None) or (gt_verts is None and gt_joints is None):
            raise ValueError("MeshError.update needs vertices or joints for both prediction and GT")
        pred, pred_root = self._joints(pred_verts, pred_joints)
        gt, gt_root = self._joints(gt_verts, gt_joints)
        pred, gt = pred.double(), gt.double()
        self.mpjpe_sum += (pred - gt).norm(dim=-1).mean(-1).sum() * _MM
        self.pa_mpjpe_sum += (similarity_align(pred, gt) - gt).norm(dim=-1).mean(-1).sum() * _MM
        self.joint_count += pred.shape[0]
        if pred_verts is not None and gt_verts is not None:
            diff = (pred_verts.double() - pred_root.double()) - (gt_verts.double() - gt_root.double())
            self.pve_sum += diff.norm(dim=-1).mean(-1).sum() * _MM
            self.vertex_count += pred_verts.shape[0]

    def compute(self) -> dict[str, Tensor]:
        joints = self.joint_count.double()
        verts = self.vertex_count.double()
        nan = torch.full((), torch.nan, dtype=torch.float64, device=joints.device)
        return {
            "mpjpe": torch.where(joints > 0, self.mpjpe_sum / joints.clamp(min=1), nan),
            "pa_mpjpe": torch.where(joints > 0, self.pa_mpjpe_sum / joints.clamp(min=1), nan),
            "pve": torch.where(verts > 0, self.pve_sum / verts.clamp(min=1), nan),
        }
