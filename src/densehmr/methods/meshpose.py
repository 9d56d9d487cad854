"""MeshPose (Le et al., CVPR 2024): VertexPose heatmaps on a low-poly mesh, lifted to 3D.

Network: backbone -> stride-4 neck -> (a) one heatmap per low-poly vertex, 2D soft-argmax with a gain
(VertexPose), (b) a foreground mask head, (c) the regression branch (pooled features -> X, Y, Z by 1D
soft-argmax over bins, visibility w). Fused vertices: xy = w xy_heatmap + (1 - w) xy_regressed, z the
regressed depth made root-relative; all in crop pixels ("pixel space": x, y crop px, z px relative to
the pelvis of the H36M landmarker). Vertices the low-poly mesh duplicates on chart seams are averaged.

Ground truth in pixel space: the GT full mesh (camera frame, metres) -> low-poly (`LowPoly.from_full`)
-> x = fx X / Z + cx, y = fy Y / Z + cy, z = (Z - Z_root) fx / Z_root, which is isotropic at the root:
one pixel in x, y or z is Z_root / fx metres there.

Metric scale for 3D evaluation (`metric_scale`):
- "template" (default, no ground truth): s = L_template / L_pred metres per pixel, with L the summed
  edge lengths of the low-poly mesh, L_template that of the body's mean-shape template. That is,
  the person is assumed to have the mean body size, as a monocular method must assume something.
- "gt_root": s = Z_root / fx from the ground-truth pelvis depth (an oracle, for analysis).
Then Z_root = s fx and each vertex back-projects to Z = Z_root + s z, X = (x - cx) Z / fx, Y likewise.
MPJPE / PVE depend on this scale; PA-MPJPE does not.

DensePose: the mesh's (`Prediction.iuv`, metric prefix "densepose") renders the upsampled full mesh in
pixel space with the body charts (as the official evaluation renders it orthographically); VertexPose's
("vertexpose/densepose") decodes the heatmaps' per-pixel posterior (`uv_decoding`) inside the mask head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densehmr.geometry.argsoftmax import spatial_softmax
from densehmr.geometry.uv_decoding import MODES, UVDecoder
from densehmr.losses import meshpose as L
from densehmr.losses.densepose import sample_at_points
from densehmr.methods.base import BaseMethod, Prediction, Targets
from densehmr.metrics.densepose_ap import GT_MASK
from densehmr.nn.backbones import build_backbone
from densehmr.nn.heads.lifting import LiftingHead
from densehmr.nn.heads.vertexpose import NECKS, MaskHead, StrideFourNeck, VertexPoseHead
from densehmr.render import screen_to_iuv, soft_silhouette
from densehmr.render.cameras import crop_intrinsics
from densehmr.viz.iuv import denormalize_image, iuv_to_rgb, side_by_side
from densehmr.viz.mesh_overlay import heatmap_overlay, mesh_overlay, side_view

_PELVIS = 0  # H36M-17 root joint
# Low-poly vertices closer than this (metres, template) are one vertex duplicated on a seam.
_SEAM_TOL = 1e-6
# Visibility labels: the paper's partial ones (annotated faces visible, vertices outside the crop not), or
# those plus the vertices the GT body hides behind its own surface (w should fall on occluded vertices).
VISIBILITY_LABELS = ("partial", "occlusion")
OCCLUSION_MARGIN_M = 0.05  # a vertex counts as hidden this far behind the visible surface (body parts are thicker)
PICTURE_VERTICES = 4


@dataclass
class MeshPoseTargets(Targets):
    """`Targets` in pixel space (module docstring): the low-poly GT mesh and the 3D joints."""

    verts_low: Tensor | None  # (B, v, 3) px, z relative to the pelvis; None without a GT mesh
    root_depth: Tensor | None  # (B,) metres, the GT pelvis depth; None without a GT mesh
    has_verts: Tensor  # (B,) bool: a GT mesh seen by the sample's own camera, no part too near it
    joints3d: Tensor  # (B, 17, 3) px, H36M-17 relative to the pelvis
    joints3d_conf: Tensor  # (B, 17) the joints' confidence
    has_joints3d: Tensor  # (B,) bool: 3D joints seen by the sample's own camera, none too near it


class MeshPose(BaseMethod):
    """MeshPose on the body's low-poly mesh; see the module docstring for spaces and scale."""

    name = "meshpose"
    default_densepose_protocol = GT_MASK  # `densepose/*` scores the rendered mesh: MeshPose's protocol

    def __init__(
        self,
        backbone: Mapping,
        *,
        neck: str, neck_channels: int, gain: float, learn_gain: bool,  # VertexPose
        lifting_hidden: int, lifting_bins: int,  # the regression branch and what it reaches
        x_range: tuple[float, float], y_range: tuple[float, float], z_range: tuple[float, float],
        mask_head_width: int, mask_head_convs: int,  # the mask head VertexPose's DensePose is decoded inside
        uv_decoding: str, decode_upsample: int, mask_threshold: float,  # VertexPose's DensePose
        visibility_labels: str,  # LW
        render_stride: int, render_sigma: float, boundary_weight: float, render_grad_to_verts: bool,
        finetune_upsampler: bool, upsampler_noise_px: float,
        metric_scale: str, default_focal: float, min_depth_ratio: float,  # pixel space and metres
        **base,
    ) -> None:
        """backbone: the backbone group's node; the options: configs/method/meshpose.yaml's `meshpose` node;
        base: BaseMethod's arguments."""
        super().__init__(**base)
        if uv_decoding not in MODES:
            raise ValueError(f"meshpose.uv_decoding must be one of {MODES}, got {uv_decoding!r}")
        if visibility_labels not in VISIBILITY_LABELS:
            raise ValueError(
                f"meshpose.visibility_labels must be one of {VISIBILITY_LABELS}, got {visibility_labels!r}"
            )
        if neck not in NECKS:
            raise ValueError(f"meshpose.neck must be one of {tuple(NECKS)}, got {neck!r}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"meshpose.mask_threshold must be in (0, 1), got {mask_threshold}")
        if metric_scale not in ("template", "gt_root"):
            raise ValueError(f"meshpose.metric_scale must be 'template' or 'gt_root', got {metric_scale!r}")
        self.save_hyperparameters()
        low = self.body.lowpoly
        num_low = low.num_vertices

        self.backbone = build_backbone(**backbone)
        self.neck = StrideFourNeck(self.backbone.out_channels, neck_channels, neck)
        self.vertexpose = VertexPoseHead(
            neck_channels, num_low, stride=self.backbone.out_strides[0], gain=gain, learn_gain=learn_gain
        )
        self.mask_head = MaskHead(neck_channels, mask_head_width, kind=neck, convs=mask_head_convs)
        self.lifting = LiftingHead(
            neck_channels + self.backbone.out_channels[-1], num_low, self.image_size,
            hidden=lifting_hidden, bins=lifting_bins, x_range=x_range, y_range=y_range, z_range=z_range,
        )

        self.uv_decoding, self.decode_upsample = uv_decoding, decode_upsample
        self.mask_logit_threshold = math.log(mask_threshold / (1.0 - mask_threshold))
        self.visibility_labels = visibility_labels
        self.render_stride, self.render_sigma, self.boundary_weight = render_stride, render_sigma, boundary_weight
        self.render_grad_to_verts, self.upsampler_noise_px = render_grad_to_verts, upsampler_noise_px
        self.metric_scale, self.min_depth_ratio = metric_scale, min_depth_ratio
        self.default_focal = default_focal * max(self.image_size)

        faces_low = low.charts.faces.long()
        template_low = low.from_full(self.body.v_template, self.body.faces)
        edges = L.mesh_edges(faces_low)
        self.register_buffer("faces_low", faces_low, persistent=False)
        self.register_buffer("edges_low", edges, persistent=False)
        self.register_buffer("faces_full", self.body.faces.long(), persistent=False)
        self.register_buffer("landmark_h36m", low.landmarkers["h36m17"].float(), persistent=False)
        self.register_buffer("landmark_coco", low.landmarkers["coco17"].float(), persistent=False)
        self.register_buffer("seam_average", _seam_average(template_low), persistent=False)
        self.template_edge_length = float(_edge_length_sum(template_low[None], edges)[0])
        upsampler = low.upsampler.float()
        if finetune_upsampler:
            self.upsampler = nn.Parameter(upsampler.clone())
        else:
            self.register_buffer("upsampler", upsampler, persistent=False)
        self._decoder: UVDecoder | None = None

    # ----------------------------------------------------------------- network
    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Raw outputs; positions in pixel space (module docstring).

        heatmaps (B, v, h, w) logits; mask_logits (B, 1, h, w); xy_heatmap (B, v, 2) px;
        xyz_regressed (B, v, 3) px, z root-relative; visibility_logits (B, v); verts_low (B, v, 3) fused.
        """
        levels = self.backbone(image)
        features = self.neck(levels)
        heatmaps, xy_heatmap = self.vertexpose(features)
        pooled = torch.cat([features.mean((2, 3)), levels[-1].mean((2, 3))], dim=1)
        xyz_regressed, visibility_logits = self.lifting(pooled)
        # Geometry in float32 under mixed precision: float16 pixel coordinates are 0.25 px coarse at 400 px.
        with torch.autocast(device_type=image.device.type, enabled=False):
            xy_heatmap, visibility_logits = xy_heatmap.float(), visibility_logits.float()
            xyz_regressed = self._root_relative(xyz_regressed.float())
            w = torch.sigmoid(visibility_logits)[..., None]
            xy = w * xy_heatmap + (1.0 - w) * xyz_regressed[..., :2]
            verts_low = torch.cat([xy, xyz_regressed[..., 2:]], dim=-1)
            if self.seam_average is not None:
                verts_low = torch.einsum("uv,bvc->buc", self.seam_average, verts_low)
        return {
            "heatmaps": heatmaps,
            "mask_logits": self.mask_head(features),
            "xy_heatmap": xy_heatmap,
            "xyz_regressed": xyz_regressed,
            "visibility_logits": visibility_logits,
            "verts_low": verts_low,
        }

    def _root_relative(self, xyz: Tensor) -> Tensor:
        root_z = xyz[..., 2] @ self.landmark_h36m[_PELVIS]  # (B,)
        return torch.cat([xyz[..., :2], xyz[..., 2:] - root_z[:, None, None]], dim=-1)

    def upsample(self, verts_low: Tensor) -> Tensor:
        """Full mesh (B, V, 3) from low-poly vertices (B, v, 3), applied about their centroid so that it is
        translation-equivariant whatever the upsampler's row sums."""
        centre = verts_low.mean(1, keepdim=True)
        return torch.einsum("Vv,bvc->bVc", self.upsampler, verts_low - centre) + centre

    # ----------------------------------------------------------------- ground truth in pixel space
    def _focal_principal(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 2) focal px, (B, 2) principal point px, (B,) bool: whether the sample has its own camera."""
        size = tuple(batch["image"].shape[-2:])
        return crop_intrinsics(batch["cam_K"], size, self.default_focal, batch.get("has_cam"))

    def targets(self, batch: dict) -> MeshPoseTargets:
        """The GT mesh and its pixel-space low-poly mesh, and the pixel-space 3D joints."""
        return self.pixel_targets(batch, self.gt_vertices(batch))

    def pixel_targets(self, batch: dict, verts: Tensor | None) -> MeshPoseTargets:
        """`targets` of the GT mesh verts (B, V, 3) camera-frame metres (or None) and the batch's 3D joints."""
        focal, principal, has_cam = self._focal_principal(batch)
        verts_low = root_depth = None
        has_verts = torch.zeros(batch["image"].shape[0], dtype=torch.bool, device=focal.device)
        if verts is not None:
            cam_low = self.body.lowpoly.from_full(verts.float(), self.faces_full)
            root_depth = torch.einsum("v,bvc->bc", self.landmark_h36m[_PELVIS], cam_low)[:, 2]
            verts_low = _to_pixel_space(cam_low, root_depth, focal, principal)
            has_verts = batch["has_smpl"] & has_cam & self._depth_ok(cam_low[..., 2], root_depth)
        kp3d = batch["kp3d"].float()
        root_z = kp3d[:, _PELVIS, 2]
        joints = _to_pixel_space(kp3d[..., :3], root_z, focal, principal)
        near = torch.where(kp3d[..., 3] > 0, kp3d[..., 2], torch.full_like(root_z[:, None], float("inf")))
        return MeshPoseTargets(
            verts=verts, verts_low=verts_low, root_depth=root_depth, has_verts=has_verts,
            joints3d=joints - joints[:, _PELVIS : _PELVIS + 1], joints3d_conf=kp3d[..., 3],
            has_joints3d=batch["has_kp3d"] & has_cam & self._depth_ok(near, root_z),
        )

    def _depth_ok(self, depth: Tensor, root_depth: Tensor) -> Tensor:
        """(B,) bool: every point's depth (B, N) m is at least min_depth_ratio x the root depth (B,) m.

        Pixel space is x = f X / Z: a body part near or behind the camera (a truncated close-up) maps to
        huge or meaningless pixels, and one such sample dominated a batch's loss by 1e3-1e5x.
        """
        return (root_depth > 0) & (depth.amin(-1) >= self.min_depth_ratio * root_depth)

    # ----------------------------------------------------------------- losses
    def loss_terms(self, out: dict, batch: dict, gt: MeshPoseTargets) -> dict[str, Tensor]:
        """Every active term (float32: the base class calls it outside autocast)."""
        terms: dict[str, Tensor] = {}
        scale = float(max(batch["image"].shape[-2:]))
        pred = out["verts_low"]

        need_points = any(self.active(k) for k in ("barycentric", "consistency", "visibility"))
        if need_points:
            valid = batch["dp_valid"] & batch["has_dp"][:, None] & (batch["dp_face_low"] >= 0)
            corners = self.faces_low[batch["dp_face_low"].clamp(min=0)]  # (B, P, 3)
            bary = batch["dp_bary_low"].float()
        if self.active("barycentric"):
            logits = sample_at_points(out["heatmaps"], batch["dp_xy"].float(), batch["image"].shape[-2:])
            log_q = torch.log_softmax(logits[valid], dim=-1)
            terms["barycentric"] = L.barycentric_cross_entropy(log_q, corners[valid], bary[valid])
        if self.active("consistency"):
            b_idx = torch.arange(pred.shape[0], device=pred.device)[:, None, None].expand_as(corners)
            corner_xy = out["xy_heatmap"][b_idx, corners]  # (B, P, 3, 2)
            terms["consistency"] = L.uv_consistency(
                batch["dp_xy"].float()[valid], corner_xy[valid], bary[valid], scale
            )
        if self.active("mask"):
            terms["mask"] = self._mask_loss(out["mask_logits"], batch)

        if self.active("visibility"):
            gt_xy = gt.verts_low[..., :2] if gt.verts_low is not None else pred[..., :2].detach()
            hidden = self._self_occluded(batch, gt) if self.visibility_labels == "occlusion" else None
            labels, known = L.visibility_labels(
                corners, valid, gt_xy, gt.has_verts, batch["image"].shape[-2:], hidden
            )
            terms["visibility"] = L.visibility_bce(out["visibility_logits"], labels, known)
        if self.active("rendering"):
            terms["rendering"] = self._rendering_loss(out, batch)

        keep = gt.has_verts
        if self.active("vertex"):
            target = gt.verts_low[keep]
            terms["vertex"] = L.vertex_l2(pred[keep], target, scale) + L.vertex_l2(
                out["xyz_regressed"][keep], target, scale
            )
        if self.active("edge"):
            terms["edge"] = L.edge_length(pred[keep], gt.verts_low[keep], self.edges_low, scale)
        if self.active("normal"):
            terms["normal"] = L.normal_cosine(pred[keep], gt.verts_low[keep], self.faces_low)
        if self.active("joints2d"):
            kp = batch["kp2d"].float()
            weight = (kp[..., 2] > 0).float() * batch["has_kp2d"][:, None].float()
            joints = torch.einsum("jv,bvc->bjc", self.landmark_coco, pred[..., :2])
            terms["joints2d"] = L.joint_distance(joints, kp[..., :2], weight, scale)
        if self.active("joints3d"):
            joints = torch.einsum("jv,bvc->bjc", self.landmark_h36m, pred)
            joints = joints - joints[:, _PELVIS : _PELVIS + 1]
            weight = gt.joints3d_conf.clamp(min=0) * gt.has_joints3d[:, None].float()
            terms["joints3d"] = L.joint_distance(joints, gt.joints3d, weight, scale)
        if self.active("upsampler") and isinstance(self.upsampler, nn.Parameter):
            terms["upsampler"] = self._upsampler_loss(batch, gt, scale)
        return terms

    def _self_occluded(self, batch: dict, gt: MeshPoseTargets) -> Tensor | None:
        """(B, v) bool: GT low-poly vertices behind the GT body's own surface, or None without a GT mesh."""
        if gt.verts_low is None:
            return None
        focal = self._focal_principal(batch)[0][:, :1]
        depth = gt.root_depth[:, None] * (1.0 + gt.verts_low[..., 2] / focal)  # pixel space back to metres
        # Rasterized at half the crop: 5x cheaper than full size, the same label for 94 % of the vertices
        # (the rest sit on the silhouette, where either label is defensible).
        screen = torch.cat([gt.verts_low[..., :2] / 2, depth[..., None]], dim=-1)
        h, w = batch["image"].shape[-2:]
        return L.self_occluded(screen, self.faces_low, (h // 2, w // 2), OCCLUSION_MARGIN_M)

    def _mask_loss(self, mask_logits: Tensor, batch: dict) -> Tensor:
        keep = batch["has_mask"]
        if not keep.any():
            return mask_logits.sum() * 0.0
        logits = _resize(mask_logits[keep], batch["mask"].shape[-2:])
        return F.binary_cross_entropy_with_logits(logits[:, 0], batch["mask"][keep].float())

    def _rendering_loss(self, out: dict, batch: dict) -> Tensor:
        """Soft silhouette of the low-poly mesh textured with visibility w, against the person mask,
        at 1 / render_stride of the crop."""
        keep = batch["has_mask"]
        if not keep.any():
            return out["visibility_logits"].sum() * 0.0
        r = self.render_stride
        h, w = batch["image"].shape[-2:]
        xy = out["verts_low"][keep, :, :2]
        xy = xy if self.render_grad_to_verts else xy.detach()
        vis = torch.sigmoid(out["visibility_logits"][keep])
        sil = soft_silhouette(
            xy / r, self.faces_low, (h // r, w // r), sigma=self.render_sigma, vertex_values=vis
        )
        mask = F.avg_pool2d(batch["mask"][keep].float()[:, None], r)[:, 0]
        return L.rendering_loss(sil, mask, self.boundary_weight)

    def _upsampler_loss(self, batch: dict, gt: MeshPoseTargets, scale: float) -> Tensor:
        """Upsampling of noised GT low-poly vertices against the GT full mesh, pixel space."""
        keep = gt.has_verts
        if not keep.any():
            return self.upsampler.sum() * 0.0
        focal, principal, _ = self._focal_principal(batch)
        full = _to_pixel_space(
            gt.verts[keep].float(), gt.root_depth[keep], focal[keep], principal[keep]
        )
        low = gt.verts_low[keep]
        noisy = low + torch.randn_like(low) * self.upsampler_noise_px
        return L.vertex_l2(self.upsample(noisy), full, scale)

    # ----------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, out: dict, batch: dict, targets: Targets | None = None) -> Prediction:
        size = tuple(batch["image"].shape[-2:])
        low = out["verts_low"].float()
        full_px = self.upsample(low)
        iuv = screen_to_iuv(full_px, self.body.charts, size)
        w = torch.sigmoid(out["visibility_logits"])
        coco = self.landmark_coco
        kp_xy = torch.einsum("jv,bvc->bjc", coco, low[..., :2])
        kp_score = torch.einsum("jv,bv->bj", coco.abs(), w) / coco.abs().sum(-1).clamp(min=1e-12)
        return Prediction(
            iuv=iuv,
            mask=(iuv[:, 0] > 0).float(),
            verts=self.to_camera(full_px, low, batch, targets),
            kp2d=torch.cat([kp_xy, kp_score[..., None]], dim=-1),
            extra_iuv={"vertexpose/densepose": self.vertexpose_iuv(out, size)},
        )

    def to_camera(
        self, verts_px: Tensor, verts_low_px: Tensor, batch: dict, targets: MeshPoseTargets | None
    ) -> Tensor:
        """Camera-frame metres (B, N, 3) of pixel-space vertices (B, N, 3), scale by `metric_scale` (gt_root
        needs the targets' root depth, else it falls back to the template's scale)."""
        focal, principal, _ = self._focal_principal(batch)
        if self.metric_scale == "gt_root" and targets is not None and targets.root_depth is not None:
            s = targets.root_depth / focal[:, 0]
        else:
            s = self.template_edge_length / _edge_length_sum(verts_low_px, self.edges_low).clamp(min=1e-6)
        root_depth = s * focal[:, 0]
        z = root_depth[:, None] + s[:, None] * verts_px[..., 2]
        xy = (verts_px[..., :2] - principal[:, None]) * z[..., None] / focal[:, None]
        return torch.cat([xy, z[..., None]], dim=-1)

    def vertexpose_iuv(self, out: dict, size: tuple[int, int]) -> Tensor:
        """VertexPose's DensePose (B, 3, H, W): heatmap posteriors decoded at decode_upsample x the heatmap
        resolution inside the mask head's foreground (its probability above `mask_threshold`), then brought
        to the crop."""
        if self._decoder is None or self._decoder.faces.device != self.faces_low.device:
            self._decoder = UVDecoder(self.body.lowpoly.charts).to(self.faces_low.device)
        heatmaps, mask_logits = out["heatmaps"], out["mask_logits"]
        h, w = heatmaps.shape[-2:]
        grid = (h * self.decode_upsample, w * self.decode_upsample)
        maps = []
        for i in range(heatmaps.shape[0]):  # one sample at a time bounds memory at v x grid
            logits = _resize(heatmaps[i : i + 1].float(), grid)
            fg = _resize(mask_logits[i : i + 1].float(), grid)[:, 0] > self.mask_logit_threshold
            maps.append(self._decoder.decode_maps(logits, fg, self.uv_decoding))
        iuv = F.interpolate(torch.cat(maps), size=size, mode="nearest")
        fg = _resize(mask_logits.float(), size) > self.mask_logit_threshold
        return iuv * fg

    # ----------------------------------------------------------------- pictures
    @torch.no_grad()
    def pictures(self, out: dict, batch: dict, pred: Prediction, targets: Targets) -> dict[str, np.ndarray]:
        """The first sample: heatmaps of a few vertices (their soft-argmax in cyan), image | GT | mesh |
        VertexPose IUV, and image | the mesh over it | the mesh from its side."""
        size = tuple(batch["image"].shape[-2:])
        image = denormalize_image(batch["image"][0])
        heat = spatial_softmax(out["heatmaps"][:1].float(), self.vertexpose.gain)[0]
        num_low = heat.shape[0]
        xy = out["xy_heatmap"][0]
        shown = [round(k * (num_low - 1) / (PICTURE_VERTICES - 1)) for k in range(PICTURE_VERTICES)]
        gt_iuv = self.picture_gt_iuv(batch, targets, 1)[0]
        verts_px = self.upsample(out["verts_low"][:1].float())[0]
        vertexpose_iuv = pred.extra_iuv["vertexpose/densepose"][0]
        faces = self.faces_full
        return {
            "heatmaps": side_by_side([heatmap_overlay(image, heat[v], xy[v]) for v in shown]),
            "iuv": side_by_side([image] + [iuv_to_rgb(m) for m in (gt_iuv, pred.iuv[0], vertexpose_iuv)]),
            "mesh": side_by_side(
                [image, mesh_overlay(image, verts_px, faces), side_view(verts_px, faces, size)]
            ),
        }


def _to_pixel_space(points: Tensor, root_depth: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pixel space (B, N, 3) of camera-frame points (B, N, 3) metres: projected x, y px and
    (Z - Z_root) fx / Z_root px, root_depth (B,) metres, focal / principal (B, 2) px."""
    z = points[..., 2:3].clamp(min=1e-6)
    xy = focal[:, None] * points[..., :2] / z + principal[:, None]
    depth = (points[..., 2] - root_depth[:, None]) * focal[:, :1] / root_depth[:, None].clamp(min=1e-6)
    return torch.cat([xy, depth[..., None]], dim=-1)


def _edge_length_sum(verts: Tensor, edges: Tensor) -> Tensor:
    """(B,) summed edge lengths of meshes (B, v, 3)."""
    return (verts[:, edges[:, 0]] - verts[:, edges[:, 1]]).norm(dim=-1).sum(-1)


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def _seam_average(template_low: Tensor) -> Tensor | None:
    """(v, v) averaging over groups of coincident vertices (seam duplicates), or None if there are none."""
    d = (template_low[:, None] - template_low[None]).norm(dim=-1)  # cdist's matmul path can give nan at 0
    same = (d < _SEAM_TOL).float()
    if bool((same.sum(1) == 1).all()):
        return None
    return same / same.sum(1, keepdim=True)
