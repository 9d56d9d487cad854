"""DenseReg / DensePose-RCNN: per-pixel part classification and per-part U, V regression on a crop.

Loss terms (config `loss_weights`): `part_ce` (parts at annotated points), `uv` (smooth-L1 on U, V of
the true part; in quantized mode on the in-bin residuals, measured in U, V units so that `uv` weighs
both modes alike), `uv_bin` (quantized mode only: bin cross-entropy), `coarse_seg` (person mask, or
DensePose's 14 coarse parts with 15 channels).
Regression `direct` (DensePose-RCNN) or `quantized` (DenseReg: K bins per part and coordinate plus a
residual, decoded `hard` or `soft`). Supervision `points` (DensePose-RCNN: the annotated points) or
`rendered` (DenseReg's dense correspondences: every body pixel of the GT mesh rendered at the output
resolution, for samples with a mesh and a camera; the others keep their points).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densehmr.body.assets import NUM_PARTS
from densehmr.losses.densepose import (
    coarse_segmentation_ce,
    part_cross_entropy,
    quantized_uv_losses,
    uv_smooth_l1,
)
from densehmr.losses.quantize import DECODE_MODES, decode
from densehmr.methods.base import PICTURE_SAMPLES, BaseMethod, Prediction, Targets
from densehmr.nn.backbones import build_backbone
from densehmr.nn.heads.densepose_head import DensePoseHead
from densehmr.viz.iuv import denormalize_image, iuv_to_rgb, side_by_side

REGRESSIONS = ("direct", "quantized")
SUPERVISIONS = ("points", "rendered")
COARSE_CLASSES = (2, 15)


class DenseReg(BaseMethod):
    """DensePose-RCNN-style dense correspondence on person crops."""

    name = "densereg"

    def __init__(
        self,
        backbone: Mapping,
        *,
        regression: str, num_bins: int, decode: str, smooth_l1_beta: float,  # U, V
        head_width: int, head_convs: int, head_norm: str, feature_stride: int, output_resolution: str,  # the head
        coarse_classes: int, supervision: str, mask_threshold: float | None,
        **base,
    ) -> None:
        """backbone: the backbone group's node; the options: configs/method/densereg.yaml's `densereg` node;
        base: BaseMethod's arguments."""
        super().__init__(**base)
        if regression not in REGRESSIONS:
            raise ValueError(f"regression must be one of {REGRESSIONS}, got {regression!r}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if supervision not in SUPERVISIONS:
            raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {supervision!r}")
        if coarse_classes not in COARSE_CLASSES:
            raise ValueError(f"coarse_classes must be one of {COARSE_CLASSES}, got {coarse_classes}")
        if num_bins < 1:
            raise ValueError(f"num_bins must be positive, got {num_bins}")
        if mask_threshold is not None and not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be null or in (0, 1), got {mask_threshold}")
        self.save_hyperparameters()
        self.regression, self.num_bins, self.decode_mode = regression, num_bins, decode
        self.coarse_classes, self.smooth_l1_beta, self.supervision = coarse_classes, smooth_l1_beta, supervision
        self.mask_threshold = mask_threshold

        self.backbone = build_backbone(**backbone)
        parts = NUM_PARTS + 1
        outputs = {"part_logits": parts, "coarse_logits": coarse_classes}
        if regression == "direct":
            outputs.update(u=parts, v=parts)
        else:
            per_map = parts * num_bins
            outputs.update(u_bins=per_map, u_res=per_map, v_bins=per_map, v_res=per_map)
        self.head = DensePoseHead(
            self.backbone.out_channels, self.backbone.out_strides, outputs, feature_stride=feature_stride,
            width=head_width, num_convs=head_convs, output_resolution=output_resolution, norm=head_norm,
        )

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """image (B, 3, H, W) -> part_logits (B, 25, h, w), coarse_logits (B, C, h, w) and either
        u, v (B, 25, h, w) or u_bins, u_res, v_bins, v_res (B, 25, K, h, w)."""
        out = self.head(self.backbone(image), tuple(image.shape[-2:]))
        if self.regression == "quantized":
            for key in ("u_bins", "u_res", "v_bins", "v_res"):
                b, _, h, w = out[key].shape
                out[key] = out[key].view(b, NUM_PARTS + 1, self.num_bins, h, w)
        return out

    def loss_terms(self, out: dict, batch: dict, targets: Targets) -> dict[str, Tensor]:
        size = tuple(batch["image"].shape[-2:])
        valid = batch["dp_valid"] & batch["has_dp"][:, None]
        sets = [dict(xy=batch["dp_xy"], part=batch["dp_I"], u=batch["dp_U"], v=batch["dp_V"], valid=valid)]
        if self.supervision == "rendered" and targets.verts is not None and batch["has_smpl"].any():
            dense = self.rendered_points(batch, targets, tuple(out["part_logits"].shape[-2:]))
            rendered = dense["valid"].any(1)
            sets[0]["valid"] = valid & ~rendered[:, None]
            # U, V terms are sums over points (DensePose's normalization): the rendered pixels count as many
            # points as the samples had annotated, so `uv`'s weight means the same in both modes.
            annotated = (valid & rendered[:, None]).sum().clamp(min=1)
            dense["scale"] = annotated / dense["valid"].sum().clamp(min=1)
            sets.append(dense)
        terms: dict[str, Tensor] = {}
        counts = torch.stack([p["valid"].sum() for p in sets]).float()
        for p, share in zip(sets, counts / counts.sum().clamp(min=1), strict=True):
            scale = p.get("scale", 1.0)
            points = dict(xy=p["xy"], part=p["part"], valid=p["valid"], image_size=size)
            found: dict[str, Tensor] = {}
            if self.active("part_ce"):
                found["part_ce"] = share * part_cross_entropy(out["part_logits"], **points)
            if self.regression == "direct" and self.active("uv"):
                found["uv"] = scale * uv_smooth_l1(
                    out["u"], out["v"], u=p["u"], v=p["v"], beta=self.smooth_l1_beta, **points
                )
            if self.regression == "quantized" and (self.active("uv") or self.active("uv_bin")):
                bin_ce, residual = quantized_uv_losses(
                    out["u_bins"], out["u_res"], out["v_bins"], out["v_res"], u=p["u"], v=p["v"],
                    beta=self.smooth_l1_beta, **points,
                )
                if self.active("uv_bin"):
                    found["uv_bin"] = share * bin_ce
                if self.active("uv"):
                    found["uv"] = scale * residual
            for k, v in found.items():
                terms[k] = terms[k] + v if k in terms else v
        if self.active("coarse_seg"):
            if self.coarse_classes == 2:
                labels, keep = batch["mask"] > 0.5, batch["has_mask"]
            else:
                labels, keep = batch["mask_parts"], batch["has_mask_parts"]
            terms["coarse_seg"] = coarse_segmentation_ce(out["coarse_logits"], labels, keep)
        return terms

    def rendered_points(self, batch: dict, targets: Targets, size: tuple[int, int]) -> dict[str, Tensor]:
        """Every pixel centre of an (h, w) grid over the crop as a point (B, h*w, ...), crop px, labelled
        by the GT mesh's rendered IUV; valid on the body of samples that have a rendered mesh."""
        iuv, keep = self.gt_iuv(batch, targets, size)
        h, w = size
        ys, xs = torch.meshgrid(torch.arange(h, device=iuv.device), torch.arange(w, device=iuv.device), indexing="ij")
        crop_h, crop_w = self.image_size
        xy = torch.stack([(xs + 0.5) * crop_w / w, (ys + 0.5) * crop_h / h], -1).reshape(1, h * w, 2)
        part, u, v = iuv.flatten(2).unbind(1)
        return dict(
            xy=xy.expand(iuv.shape[0], -1, -1).float(), part=part.long(), u=u, v=v,
            valid=(part > 0) & keep[:, None],
        )

    def decoded_uv(self, out: dict) -> tuple[Tensor, Tensor]:
        """U and V (B, 25, h, w) of every part at the output resolution."""
        if self.regression == "direct":
            return out["u"], out["v"]
        return (
            decode(out["u_bins"], out["u_res"], self.decode_mode, dim=2),
            decode(out["v_bins"], out["v_res"], self.decode_mode, dim=2),
        )

    def predict(self, out: dict, batch: dict, targets: Targets | None = None) -> Prediction:
        """IUV (B, 3, H, W) at crop resolution: I = arg-max part where the coarse segmentation says
        person (else 0), U, V of that part; mask (B, H, W) float, the coarse person segmentation: its
        arg-max (DensePose-RCNN's rule) or, with `mask_threshold`, 1 - P(background) above it."""
        size = tuple(batch["image"].shape[-2:])
        u, v = self.decoded_uv(out)
        maps = torch.cat([out["part_logits"], out["coarse_logits"], u, v], 1)
        if maps.shape[-2:] != size:
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        parts = NUM_PARTS + 1
        part_logits, coarse, u, v = maps.split([parts, self.coarse_classes, parts, parts], 1)
        if self.mask_threshold is None:
            person = coarse.argmax(1) > 0
        else:
            person = 1.0 - coarse.float().softmax(1)[:, 0] > self.mask_threshold
        part = part_logits.argmax(1) * person
        index = part[:, None]
        fg = part > 0
        u = torch.where(fg, u.gather(1, index)[:, 0].clamp(0, 1), 0.0)
        v = torch.where(fg, v.gather(1, index)[:, 0].clamp(0, 1), 0.0)
        iuv = torch.stack([part.to(u.dtype), u, v], 1)
        return Prediction(iuv=iuv, mask=person.to(u.dtype))

    def pictures(self, out: dict, batch: dict, pred: Prediction, targets: Targets) -> dict[str, np.ndarray]:
        """One picture, a row per sample: the image, the ground truth (the GT mesh rendered with the
        body's charts when the sample has one and a camera, else its annotated points), the prediction."""
        n = min(PICTURE_SAMPLES, batch["image"].shape[0])
        gt = self.picture_gt_iuv(batch, targets, n)
        rows = [
            side_by_side([denormalize_image(batch["image"][i]), iuv_to_rgb(gt[i]), iuv_to_rgb(pred.iuv[i])])
            for i in range(n)
        ]
        return {"iuv": np.concatenate(rows, axis=0)}
