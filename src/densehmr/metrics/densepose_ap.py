"""DensePose AP/AR (GPS, GPSm, IoU modes) with the semantics of DensePose's official COCO evaluator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from densehmr.body.assets import NUM_PARTS, GeodesicEval
from densehmr.metrics.coco_ap import CocoAPMetric, by_confidence, padded_field
from densehmr.metrics.coco_matching import (
    MAX_DETS,
    STAT_NAMES,
    MatchResult,
    box_iou_xywh,
    collect,
    count_gt,
    greedy_match,
    out_of_area,
)
from densehmr.metrics.densepose_gps import (
    FIXED_KAPPA,
    exact_kappa,
    mean_per_group,
    part_sorted_points,
    point_similarity,
    snap_to_eval_points,
)
from densehmr.metrics.densepose_masks import gt_mask, paste, placed_iou

MODES = ("gps", "gpsm", "iou")
# Scoring protocols of a predicted IUV on crops: as predicted, or (MeshPose's evaluation of a rendered
# mesh) kept only inside the GT person mask.
UNMASKED, GT_MASK = "unmasked", "gt_mask"
PROTOCOLS = (UNMASKED, GT_MASK)
# DensePose-COCO point coordinates run over 0..255 of the box.
_DP_RANGE = 255.0


def _gt_part(dp_i: Tensor) -> Tensor:
    """Integer part 1..24 of GT labels (float in JSON); -1 for anything else (DensePose drops those)."""
    part = dp_i.round().long() if dp_i.is_floating_point() else dp_i.long()
    ok = (part.double() == dp_i.double()) & (part >= 1) & (part <= NUM_PARTS)
    return torch.where(ok, part, torch.full_like(part, -1))


class DensePoseAP(CocoAPMetric):
    """DensePose AP/AR per mode, equal to DensePose's COCO evaluator (densepose_coco_evaluation.py).

    Per (detection, GT) pair, a GT point (dp_x, dp_y) maps to the detection's box pixel
    int(dp_x·w_gt/255 + x_gt − x_dt) (same for y); outside that box or on predicted background it
    scores 0, else exp(−d²/2κ²) with d the geodesic distance between the snapped true and predicted
    evaluation points. GPS = mean over the GT's points; GPSm = sqrt(GPS · mask IoU); IOU = mask IoU.
    Matching and accumulation are COCOeval's with maxDets 20 and areas all / medium / large, plus
    DensePose's rules (GT without dp_x ignored; box-IoU >= 0.8 ignore transfer; images whose GT are
    all ignored do not count their detections). Equal to the official numbers up to float rounding
    (a GPS within ~1e-7 of a threshold could fall the other way).

    geodesic: evaluation points and distances (the body's, e.g. load_body("open").geodesic, or
              DensePose's SMPL files through densehmr.body.densepose_files.read_eval_data).
    modes:    subset of ("gps", "gpsm", "iou").
    kappa:    "per_part" (DensePose's current rule: κ of the GT point's coarse part) or "fixed"
              (the original rule, κ = 0.255 m).
    quantize_uv: in update_crops, quantize predicted U, V to uint8 as DensePose's evaluator does with
              a model's raw output (`(uv · 255).byte()`).
    protocol: in update_crops, "unmasked" scores the IUV as predicted; "gt_mask" (MeshPose's protocol
              for a rendered mesh) first clears it outside the crop's GT person mask, which then also
              bounds the mask the GPSm and IoU modes compare (a crop without a GT mask is left as it
              is). GPS can only drop under it (GT points outside the GT mask lose their prediction).

    compute() returns "{mode}_{stat}" for stat in ap, ap50, ap75, apm, apl, ar, ar50, ar75, arm, arl.

    AP on crops (update_crops): each crop is an image holding one person; the detection is the GT box
    with score 1 and the crop's predicted IUV; masks are compared inside the box, areas are in crop
    pixels (GT area = its mask's). AP then measures how many crops reach each GPS threshold.
    """

    def __init__(
        self,
        geodesic: GeodesicEval,
        modes: Sequence[str] = MODES,
        kappa: Literal["per_part", "fixed"] = "per_part",
        quantize_uv: bool = True,
        max_dets: int = MAX_DETS,
        protocol: str = UNMASKED,
        **kwargs,
    ) -> None:
        unknown = set(modes) - set(MODES)
        if unknown or not modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes}")
        if kappa not in ("per_part", "fixed"):
            raise ValueError(f"kappa must be 'per_part' or 'fixed', got {kappa!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        super().__init__(num_modes=len(modes), max_dets=max_dets, **kwargs)
        self.modes = tuple(modes)
        self.quantize_uv = quantize_uv
        self.protocol = protocol
        for f in fields(GeodesicEval):
            self.register_buffer(f"_geo_{f.name}", getattr(geodesic, f.name), persistent=False)
        index, uv, start = part_sorted_points(geodesic.point_part, geodesic.point_uv)
        self.register_buffer("_snap_index", index, persistent=False)
        self.register_buffer("_snap_uv", uv, persistent=False)
        self.register_buffer("_snap_start", start, persistent=False)
        table = (
            exact_kappa(geodesic.mean_geodesic)
            if kappa == "per_part"
            else torch.full((9,), FIXED_KAPPA, dtype=torch.float64)
        )
        self.register_buffer("_kappa", table.double(), persistent=False)

    @property
    def geodesic(self) -> GeodesicEval:
        return GeodesicEval(**{f.name: getattr(self, f"_geo_{f.name}") for f in fields(GeodesicEval)})

    @property
    def _needs_masks(self) -> bool:
        return "gpsm" in self.modes or "iou" in self.modes

    def _snap(self, part: Tensor, uv: Tensor) -> Tensor:
        """Evaluation point (P,) of parts (P,) and UVs (P, 2): float in [0, 1], or integer U·255, V·255
        (predictions as DensePose quantizes them), which are snapped once per distinct (I, U, V)."""
        if uv.is_floating_point():
            return snap_to_eval_points(part, uv, self._snap_index, self._snap_uv, self._snap_start)
        key = (part.clamp(min=0) * 256 + uv[:, 0].long()) * 256 + uv[:, 1].long()
        unique, inverse = torch.unique(key, return_inverse=True)
        unique_uv = torch.stack([(unique // 256) % 256, unique % 256], 1).double() / 255.0
        return snap_to_eval_points(
            unique // 65536, unique_uv, self._snap_index, self._snap_uv, self._snap_start
        )[inverse]

    def _gps(
        self,
        gt_part: Tensor,
        gt_uv: Tensor,
        pt_gt: Tensor,
        pt_pair: Tensor,
        pred_part: Tensor,
        pred_uv: Tensor,
        num_pairs: int,
    ) -> Tensor:
        """GPS per pair (num_pairs,) float64.

        gt_part (Pg,) / gt_uv (Pg, 2): GT points; per pair-point (Q,): pt_gt its GT point, pt_pair its
        pair, pred_part (0 on background or outside the box) and pred_uv the prediction there
        (see _snap for its two forms).
        """
        gt_eval = self._snap(gt_part, gt_uv)[pt_gt]
        pred_eval = self._snap(pred_part, pred_uv)
        usable = gt_eval >= 0
        sim = point_similarity(self.geodesic, self._kappa, gt_eval[usable], pred_eval[usable])
        return mean_per_group(sim, pt_pair[usable], num_pairs)

    def _scores(self, gps: Tensor, iou: Tensor | None) -> Tensor:
        """(N, M, D, G) similarity per mode from GPS and mask IoU (N, D, G)."""
        per_mode = {"gps": lambda: gps, "gpsm": lambda: torch.sqrt(iou * gps), "iou": lambda: iou}
        return torch.stack([per_mode[m]() for m in self.modes], dim=1)

    def _finish(
        self, image_id, scores, det_box, det_score, det_valid, gt_box, gt_area, gt_crowd, gt_no_dp, gt_valid
    ) -> MatchResult:
        """Match padded images (N, D, G) given their similarity per mode (N, M, D, G)."""
        ignore = gt_no_dp[:, None, :] | out_of_area(gt_area).transpose(1, 2)
        det_out = out_of_area(det_box[..., 2] * det_box[..., 3]).transpose(1, 2)
        tp, fp = greedy_match(
            scores,
            ignore,
            gt_crowd,
            gt_valid,
            det_valid,
            det_out,
            box_iou=box_iou_xywh(det_box, gt_box, gt_crowd),
            densepose_rules=True,
        )
        return collect(image_id, det_score, det_valid, tp, fp, count_gt(ignore, gt_valid))

    def pair_similarity(self, images: Sequence[Mapping], gts, dts) -> Tensor:
        """Similarity per mode of every detection with every GT of each image: (N, M, D, G) float64.

        Arguments as update's; detections in confidence order (cut to max_dets), GT in given order,
        zero on padding. A GT without dp_x scores 0 in GPS and GPSm, as in DensePose's evaluator.
        """
        dets = [by_confidence(d, self.max_dets) for d in dts]
        n = len(images)
        g_slots = max((len(g) for g in gts), default=0)
        d_slots = max((len(d) for d in dets), default=0)
        gps = torch.zeros(n, d_slots, g_slots, dtype=torch.float64, device=self.device)
        pairs = [
            (i, d, g)
            for i in range(n)
            for d in range(len(dets[i]))
            for g, ann in enumerate(gts[i])
            if "dp_x" in ann
        ]
        if pairs:
            gps[tuple(torch.tensor(pairs, device=self.device).T)] = self._pairs_gps(gts, dets, pairs)
        iou = self._pairs_mask_iou(images, gts, dets, gps.shape) if self._needs_masks else None
        return self._scores(gps, iou)

    def _match_images(self, images: Sequence[Mapping], gts, dts) -> MatchResult:
        dets = [by_confidence(d, self.max_dets) for d in dts]
        dev = self.device
        return self._finish(
            torch.tensor([int(im["id"]) for im in images], dtype=torch.long, device=dev),
            self.pair_similarity(images, gts, dts),
            padded_field(dets, lambda d: d["bbox"], torch.float64, 0.0, 4).to(dev),
            padded_field(dets, lambda d: float(d["score"]), torch.float64, 0.0).to(dev),
            padded_field(dets, lambda d: True, torch.bool, False).to(dev),
            padded_field(gts, lambda g: g["bbox"], torch.float64, 0.0, 4).to(dev),
            padded_field(gts, lambda g: float(g["area"]), torch.float64, 0.0).to(dev),
            padded_field(gts, lambda g: bool(g.get("iscrowd", 0)), torch.bool, False).to(dev),
            padded_field(gts, lambda g: "dp_x" not in g, torch.bool, True).to(dev),
            padded_field(gts, lambda g: True, torch.bool, False).to(dev),
        )

    def _pairs_gps(self, gts, dets, pairs: list[tuple[int, int, int]]) -> Tensor:
        """GPS of each (image, detection slot, GT slot) pair, all pairs at once."""
        dev = self.device
        gt_keys = sorted({(i, g) for i, _, g in pairs})
        gt_row = {key: r for r, key in enumerate(gt_keys)}
        det_keys = sorted({(i, d) for i, d, _ in pairs})
        det_row = {key: r for r, key in enumerate(det_keys)}

        # GT points, concatenated per GT.
        anns = [gts[i][g] for i, g in gt_keys]
        counts = torch.tensor([len(a["dp_x"]) for a in anns], dtype=torch.long)
        cols = {
            k: torch.tensor(np.concatenate([np.asarray(a[k], dtype=np.float64).reshape(-1) for a in anns]))
            for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
        }
        gt_start = counts.cumsum(0) - counts
        gt_box = _rows([a["bbox"] for a in anns], 4)

        # Detection IUV maps, flattened into one buffer per channel.
        maps = [_iuv_map(dets[i][d]) for i, d in det_keys]
        widths = torch.tensor([m.shape[2] for m in maps], dtype=torch.long)
        sizes = torch.tensor([m.shape[1] * m.shape[2] for m in maps], dtype=torch.long)
        offsets = sizes.cumsum(0) - sizes
        buffer = torch.cat([m.reshape(3, -1) for m in maps], dim=1).to(dev)
        det_box = _rows([dets[i][d]["bbox"] for i, d in det_keys], 4)

        pair_gt = torch.tensor([gt_row[(i, g)] for i, _, g in pairs], dtype=torch.long)
        pair_det = torch.tensor([det_row[(i, d)] for i, d, _ in pairs], dtype=torch.long)
        per_pair = counts[pair_gt]
        pt_pair = torch.repeat_interleave(torch.arange(len(pairs)), per_pair)
        pt_gt = (
            gt_start[pair_gt][pt_pair]
            + torch.arange(int(per_pair.sum()))
            - (per_pair.cumsum(0) - per_pair)[pt_pair]
        )

        gb, db = gt_box[pair_gt][pt_pair], det_box[pair_det][pt_pair]
        # Same operations, in the same order, as the official evaluator before its int() truncation.
        px = torch.trunc(cols["dp_x"][pt_gt] * gb[:, 2] / _DP_RANGE + gb[:, 0] - db[:, 0]).long()
        py = torch.trunc(cols["dp_y"][pt_gt] * gb[:, 3] / _DP_RANGE + gb[:, 1] - db[:, 1]).long()
        inside = (
            (px >= 0) & (py >= 0) & (px < torch.trunc(db[:, 2]).long()) & (py < torch.trunc(db[:, 3]).long())
        )
        flat = offsets[pair_det][pt_pair] + py * widths[pair_det][pt_pair] + px
        flat = torch.where(inside, flat, torch.zeros_like(flat)).to(dev)
        inside = inside.to(dev)
        values = buffer[:, flat]
        pred_part = torch.where(inside, values[0].long(), torch.zeros_like(flat))
        pred_uv = values[1:].T.long()
        gt_uv = torch.stack([cols["dp_U"], cols["dp_V"]], 1).to(dev)
        return self._gps(
            _gt_part(cols["dp_I"]).to(dev),
            gt_uv,
            pt_gt.to(dev),
            pt_pair.to(dev),
            pred_part,
            pred_uv,
            len(pairs),
        )

    def _pairs_mask_iou(self, images, gts, dets, shape: torch.Size) -> Tensor:
        """Mask IoU (N, D, G) of every detection with every GT of its image, on the image canvas."""
        dev = self.device
        iou = torch.zeros(shape, dtype=torch.float64, device=dev)
        for i, image in enumerate(images):
            if not gts[i] or not dets[i]:
                continue
            hw = (int(image["height"]), int(image["width"]))
            gmasks = [gt_mask(g, hw).to(dev) for g in gts[i]]
            for d, det in enumerate(dets[i]):
                dmask = paste(_iuv_map(det)[0].to(dev) > 0, det["bbox"], hw)
                iou[i, d, : len(gmasks)] = torch.stack(
                    [
                        placed_iou(dmask, gm, bool(g.get("iscrowd", 0)))
                        for gm, g in zip(gmasks, gts[i], strict=True)
                    ]
                )
        return iou

    def update_crops(
        self,
        iuv: Tensor,
        dp_xy: Tensor,
        dp_I: Tensor,
        dp_U: Tensor,
        dp_V: Tensor,
        dp_valid: Tensor,
        gt_mask: Tensor,
        bbox: Tensor,
        has_dp: Tensor,
        ids: Tensor | None = None,
    ) -> None:
        """One person per crop.

        iuv (B, 3, H, W): predicted I (float or long, 0 background) and U, V in [0, 1];
        dp_xy (B, P, 2) GT points in crop pixels (read at int() of each coordinate); dp_I, dp_U, dp_V
        (B, P); dp_valid (B, P) bool; gt_mask (B, H, W) bool; bbox (B, 4) xywh GT box in crop pixels
        (also the detection's); has_dp (B,) bool (a crop without it, or without valid points, has an
        ignored GT); ids (B,) optional dataset indices (see CocoAPMetric._crop_ids).
        """
        b, _, h, w = iuv.shape
        dev = iuv.device
        if self.protocol == GT_MASK:
            has_mask = gt_mask.flatten(1).any(1)
            iuv = iuv * (gt_mask.bool() | ~has_mask[:, None, None])[:, None].to(iuv.dtype)
        part_map = (iuv[:, 0].round() if iuv.is_floating_point() else iuv[:, 0]).long()
        uv_map = iuv[:, 1:].float()
        if self.quantize_uv:  # in float32, then truncated, as DensePose's evaluator does
            uv_map = (uv_map * 255).clamp(0, 255).to(torch.uint8).long()

        x, y = dp_xy[..., 0].double(), dp_xy[..., 1].double()
        col, row = torch.trunc(x).long(), torch.trunc(y).long()
        box = bbox.double()
        px, py = torch.trunc(x - box[:, None, 0]).long(), torch.trunc(y - box[:, None, 1]).long()
        in_box = (
            (px >= 0) & (py >= 0) & (px < torch.trunc(box[:, None, 2])) & (py < torch.trunc(box[:, None, 3]))
        )
        inside = in_box & (x >= 0) & (y >= 0) & (col < w) & (row < h)
        gt_part = _gt_part(dp_I)
        usable = dp_valid.bool() & has_dp.bool()[:, None] & (gt_part > 0)

        sample = torch.arange(b, device=dev)[:, None].expand_as(col)
        flat_idx = (sample * h + row.clamp(0, h - 1)) * w + col.clamp(0, w - 1)
        pred_part = torch.where(inside, part_map.reshape(-1)[flat_idx], torch.zeros_like(flat_idx))
        pred_uv = uv_map.permute(0, 2, 3, 1).reshape(-1, 2)[flat_idx]
        pred_uv = pred_uv if self.quantize_uv else pred_uv.double()
        keep = usable.reshape(-1)
        num_points = int(keep.sum())
        gps = self._gps(
            gt_part.reshape(-1)[keep],
            torch.stack([dp_U, dp_V], -1).double().reshape(-1, 2)[keep],
            torch.arange(num_points, device=dev),
            sample.reshape(-1)[keep],
            pred_part.reshape(-1)[keep],
            pred_uv.reshape(-1, 2)[keep],
            b,
        )
        gt = gt_mask.bool()
        iou = _box_window_iou(part_map > 0, gt, bbox) if self._needs_masks else None
        ones = torch.ones(b, 1, dtype=torch.bool, device=dev)
        self.update(
            self._finish(
                self._crop_ids(b, ids, dev),
                self._scores(gps[:, None, None], None if iou is None else iou[:, None, None]),
                box[:, None],
                torch.ones(b, 1, dtype=torch.float64, device=dev),
                ones,
                box[:, None],
                gt.sum((1, 2)).double()[:, None],
                ~ones,
                ~usable.any(1)[:, None],
                ones,
            )
        )

    def compute(self) -> dict[str, Tensor]:
        stats = self._stats()
        return {
            f"{mode}_{name.lower()}": stats[m, i]
            for m, mode in enumerate(self.modes)
            for i, name in enumerate(STAT_NAMES)
        }


def _rows(values: list, width: int) -> Tensor:
    """(n, width) float64 from a list of n sequences (n may be 0)."""
    return torch.tensor(values, dtype=torch.float64).reshape(len(values), width)


def _iuv_map(det: Mapping) -> Tensor:
    """A detection's (3, int(h), int(w)) IUV map [I, U·255, V·255] as a tensor, checked against its box."""
    iuv = det["iuv"]
    iuv = iuv if isinstance(iuv, Tensor) else torch.from_numpy(np.ascontiguousarray(iuv))
    expected = (3, int(float(det["bbox"][3])), int(float(det["bbox"][2])))
    if tuple(iuv.shape) != expected:
        raise ValueError(f"detection iuv has shape {tuple(iuv.shape)}, its box needs {expected}")
    return iuv


def _box_window_iou(pred: Tensor, gt: Tensor, bbox: Tensor) -> Tensor:
    """Per-crop mask IoU inside the box window: pred, gt (B, H, W) bool, bbox (B, 4) -> (B,) float64
    (0 without overlap, as pycocotools)."""
    _, h, w = pred.shape
    x0, y0 = torch.trunc(bbox[:, 0]).long(), torch.trunc(bbox[:, 1]).long()
    x1, y1 = torch.trunc(bbox[:, 0] + bbox[:, 2]).long(), torch.trunc(bbox[:, 1] + bbox[:, 3]).long()
    cols = torch.arange(w, device=pred.device)
    rows = torch.arange(h, device=pred.device)
    window = (
        (rows[None, :, None] >= y0[:, None, None])
        & (rows[None, :, None] < y1[:, None, None])
        & (cols[None, None, :] >= x0[:, None, None])
        & (cols[None, None, :] < x1[:, None, None])
    )
    inter = (pred & gt & window).sum((1, 2)).double()
    union = ((pred | gt) & window).sum((1, 2)).double()
    return torch.where(inter > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
