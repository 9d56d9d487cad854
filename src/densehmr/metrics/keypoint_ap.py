"""COCO keypoint AP/AR from OKS, with pycocotools' semantics (sigmas, area ranges, matching)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from densehmr.metrics.coco_ap import CocoAPMetric, by_confidence, padded_field
from densehmr.metrics.coco_matching import (
    MAX_DETS,
    STAT_NAMES,
    MatchResult,
    collect,
    count_gt,
    greedy_match,
    out_of_area,
)

# COCO's per-keypoint OKS constants (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = (
    0.26,
    0.25,
    0.25,
    0.35,
    0.35,
    0.79,
    0.79,
    0.72,
    0.72,
    0.62,
    0.62,
    1.07,
    1.07,
    0.87,
    0.87,
    0.89,
    0.89,
)
_EPS = 2.220446049250313e-16  # np.spacing(1), pycocotools' guard on the GT area


def object_keypoint_similarity(det_xy: Tensor, gt_kp: Tensor, gt_bbox: Tensor, gt_area: Tensor) -> Tensor:
    """COCO OKS of every detection with every GT of an image, batched over images.

    det_xy (..., D, K, 2) and gt_kp (..., G, K, 3) [x, y, visibility] in pixels; gt_bbox (..., G, 4)
    xywh; gt_area (..., G) pixels². Returns (..., D, G) float64. A GT without visible keypoints is
    compared through the detection's distance to twice its box, as pycocotools does.
    """
    det_xy, gt_kp = det_xy.double(), gt_kp.double()
    gt_bbox, gt_area = gt_bbox.double(), gt_area.double()
    sigmas = torch.tensor(COCO_SIGMAS, dtype=torch.float64, device=det_xy.device) / 10.0
    variances = (sigmas * 2) ** 2
    xd, yd = det_xy[..., :, None, :, 0], det_xy[..., :, None, :, 1]  # (..., D, 1, K)
    xg, yg, vg = (gt_kp[..., None, :, :, i] for i in range(3))  # (..., 1, G, K)
    visible = vg > 0
    has_visible = visible.any(-1, keepdim=True)
    bb = gt_bbox[..., None, :, None, :]
    x0, x1 = bb[..., 0] - bb[..., 2], bb[..., 0] + bb[..., 2] * 2
    y0, y1 = bb[..., 1] - bb[..., 3], bb[..., 1] + bb[..., 3] * 2
    zero = torch.zeros_like(xd)
    dx = torch.where(has_visible, xd - xg, torch.maximum(zero, x0 - xd) + torch.maximum(zero, xd - x1))
    dy = torch.where(has_visible, yd - yg, torch.maximum(zero, y0 - yd) + torch.maximum(zero, yd - y1))
    e = (dx**2 + dy**2) / variances / (gt_area[..., None, :, None] + _EPS) / 2
    weight = torch.where(has_visible, visible, torch.ones_like(visible)).double()
    return (torch.exp(-e) * weight).sum(-1) / weight.sum(-1)


def detection_area(det: Mapping) -> float:
    """Area COCO.loadRes gives a keypoint result (overriding any `area` it holds): its box's if it has
    one, else its keypoints' extent."""
    if det.get("bbox"):
        return float(det["bbox"][2]) * float(det["bbox"][3])
    kp = torch.tensor(det["keypoints"], dtype=torch.float64).reshape(-1, 3)
    return float((kp[:, 0].max() - kp[:, 0].min()) * (kp[:, 1].max() - kp[:, 1].min()))


class KeypointAP(CocoAPMetric):
    """COCO keypoint AP/AR (OKS), equal to pycocotools' COCOeval(iouType="keypoints") for one category.

    compute() returns {"ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl"}
    (-1 where a range has no GT).

    AP on crops (update_crops): each crop is an image holding one person whose detection is the GT box
    with score 1, so AP measures how many crops reach each OKS threshold; areas are in crop pixels.
    """

    def __init__(self, max_dets: int = MAX_DETS, **kwargs) -> None:
        super().__init__(num_modes=1, max_dets=max_dets, **kwargs)

    def _match_images(self, images: Sequence[Mapping], gts, dts) -> MatchResult:
        dets = [by_confidence(d, self.max_dets) for d in dts]
        k = (len(COCO_SIGMAS), 3)
        gt_kp = padded_field(gts, lambda g: g["keypoints"], torch.float64, 0.0, k)
        # pycocotools ignores crowds and people whose num_keypoints is 0.
        gt_ignore = padded_field(
            gts,
            lambda g: (
                bool(g.get("iscrowd", 0))
                or (g["num_keypoints"] if "num_keypoints" in g else sum(v > 0 for v in g["keypoints"][2::3]))
                == 0
            ),
            torch.bool,
            True,
        )
        dev = self.device
        return self._match(
            torch.tensor([int(im["id"]) for im in images], dtype=torch.long, device=dev),
            padded_field(dets, lambda d: d["keypoints"], torch.float64, 0.0, k).to(dev),
            padded_field(dets, lambda d: float(d["score"]), torch.float64, 0.0).to(dev),
            padded_field(dets, detection_area, torch.float64, 0.0).to(dev),
            padded_field(dets, lambda d: True, torch.bool, False).to(dev),
            gt_kp.to(dev),
            padded_field(gts, lambda g: g["bbox"], torch.float64, 0.0, 4).to(dev),
            padded_field(gts, lambda g: float(g["area"]), torch.float64, 0.0).to(dev),
            padded_field(gts, lambda g: bool(g.get("iscrowd", 0)), torch.bool, False).to(dev),
            gt_ignore.to(dev),
            padded_field(gts, lambda g: True, torch.bool, False).to(dev),
        )

    @staticmethod
    def _match(
        image_id,
        det_kp,
        det_score,
        det_area,
        det_valid,
        gt_kp,
        gt_box,
        gt_area,
        gt_crowd,
        gt_ignore,
        gt_valid,
    ) -> MatchResult:
        """Padded tensors of N images -> MatchResult (see greedy_match for shapes)."""
        oks = object_keypoint_similarity(det_kp[..., :2], gt_kp, gt_box, gt_area)  # (N, D, G)
        ignore = gt_ignore[:, None, :] | out_of_area(gt_area).transpose(1, 2)  # (N, A, G)
        tp, fp = greedy_match(
            oks[:, None], ignore, gt_crowd, gt_valid, det_valid, out_of_area(det_area).transpose(1, 2)
        )
        return collect(image_id, det_score, det_valid, tp, fp, count_gt(ignore, gt_valid))

    def update_crops(
        self,
        pred_kp: Tensor,
        gt_kp: Tensor,
        bbox: Tensor,
        area: Tensor,
        has_kp2d: Tensor,
        ids: Tensor | None = None,
    ) -> None:
        """One person per crop: pred_kp (B, 17, 3) [x, y, score] and gt_kp (B, 17, 3) [x, y, v] in crop
        pixels; bbox (B, 4) xywh GT box (also the detection's); area (B,) GT area in crop pixels²;
        has_kp2d (B,) bool (a crop without it, or without visible keypoints, has an ignored GT);
        ids (B,) optional dataset indices (see CocoAPMetric._crop_ids).
        """
        b, dev = pred_kp.shape[0], pred_kp.device
        ones = torch.ones(b, 1, dtype=torch.bool, device=dev)
        ignore = ~has_kp2d.bool() | ~(gt_kp[..., 2] > 0).any(-1)
        self.update(
            self._match(
                self._crop_ids(b, ids, dev),
                pred_kp[:, None].double(),
                torch.ones(b, 1, dtype=torch.float64, device=dev),
                (bbox[:, 2] * bbox[:, 3]).double()[:, None],
                ones,
                gt_kp[:, None].double(),
                bbox[:, None].double(),
                area.double()[:, None],
                ~ones,
                ignore[:, None],
                ones,
            )
        )

    def compute(self) -> dict[str, Tensor]:
        stats = self._stats()[0]
        return {name.lower(): stats[i] for i, name in enumerate(STAT_NAMES)}
