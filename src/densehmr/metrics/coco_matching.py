"""COCO-style greedy matching and precision/recall accumulation (one category).

Shared by KeypointAP (OKS) and DensePoseAP (GPS, GPSm, IoU). The semantics are those of pycocotools'
COCOeval (evaluateImg, accumulate, summarize with the keypoint parameters: thresholds 0.50:0.05:0.95,
101 recall points, maxDets 20, areas all / medium / large), with DensePose's evaluator's two additions
behind `densepose_rules`. Everything is batched over images: the greedy loop runs over detection slots
(at most maxDets), never over images, thresholds or area ranges.

Shapes: N images, M similarity modes, A area ranges, T thresholds, D detection slots, G GT slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Built by numpy because pycocotools compares against numpy's linspace values (0.65 is
# 0.6500000000000001 there); a one-ulp difference flips matches and recall steps that land exactly on them.
IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist())
RECALL_THRESHOLDS = tuple(
    np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True).tolist()
)
AREA_RANGES = ((0.0, 1e5**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))  # all, medium, large (pixels²)
MAX_DETS = 20
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# DensePose: an unmatched detection whose box overlaps an unmatched GT this much takes its ignore flag.
BOX_IGNORE_IOU = 0.8
_EPS = float(np.spacing(1))


@dataclass(frozen=True)
class MatchResult:
    """Per-detection outcome of matching a set of images, ready to accumulate.

    image_id: (D,) int64 image of each detection (orders tied scores as pycocotools does).
    score:    (D,) float64 detection confidence.
    tp, fp:   (D, M, A, T) bool; a detection that is neither is ignored.
    num_gt:   (A,) int64 number of non-ignored GT per area range.
    """

    image_id: Tensor
    score: Tensor
    tp: Tensor
    fp: Tensor
    num_gt: Tensor


def out_of_area(area: Tensor) -> Tensor:
    """(..., A) bool: area (...) outside each of AREA_RANGES, as COCOeval tests it."""
    lo = area.new_tensor([r[0] for r in AREA_RANGES])
    hi = area.new_tensor([r[1] for r in AREA_RANGES])
    return (area[..., None] < lo) | (area[..., None] > hi)


def box_iou_xywh(det: Tensor, gt: Tensor, gt_crowd: Tensor) -> Tensor:
    """pycocotools' box IoU: det (..., D, 4), gt (..., G, 4) xywh, gt_crowd (..., G) -> (..., D, G).

    A crowd GT's union is the detection's own area.
    """
    d, g = det[..., :, None, :], gt[..., None, :, :]
    w = torch.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - torch.maximum(d[..., 0], g[..., 0])
    h = torch.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - torch.maximum(d[..., 1], g[..., 1])
    inter = w * h
    det_area, gt_area = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = torch.where(gt_crowd[..., None, :], det_area, det_area + gt_area - inter)
    return torch.where((w > 0) & (h > 0), inter / union, torch.zeros_like(inter))


def _last_best(chosen: Tensor, value: Tensor, rank: Tensor) -> tuple[Tensor, Tensor]:
    """Among `chosen` (..., G), the slot of highest `value`, ties to the highest `rank`.

    This is COCOeval's running `if iou < best: continue` loop, which lets a later equal GT win.
    Returns (index (...,), any chosen (...,)).
    """
    key = torch.where(chosen, value, torch.full_like(value, -torch.inf))
    at_best = chosen & (key == key.amax(-1, keepdim=True))
    index = torch.where(at_best, rank + 1, torch.zeros_like(rank)).argmax(-1)
    return index, chosen.any(-1)


def greedy_match(
    scores: Tensor,
    gt_ignore: Tensor,
    gt_crowd: Tensor,
    gt_valid: Tensor,
    det_valid: Tensor,
    det_out_of_area: Tensor,
    box_iou: Tensor | None = None,
    densepose_rules: bool = False,
) -> tuple[Tensor, Tensor]:
    """COCOeval.evaluateImg for a batch of images.

    scores:          (N, M, D, G) float64 similarity (OKS, GPS, ...) of each detection with each GT;
                     detections sorted by confidence (highest first) and cut to maxDets.
    gt_ignore:       (N, A, G) bool ignore flag of each GT per area range (already including the range).
    gt_crowd:        (N, G) bool iscrowd (a crowd GT can be matched by several detections).
    gt_valid:        (N, G) bool, False on padding; det_valid (N, D) likewise.
    det_out_of_area: (N, A, D) bool detection area outside the range (ignored when unmatched).
    box_iou:         (N, D, G) box IoU, needed with densepose_rules.
    densepose_rules: DensePose's evaluator's additions: (1) a detection left unmatched at the strictest
                     threshold takes, at every threshold, the ignore flag of the unmatched GT it overlaps
                     most with box IoU >= 0.8 (if that GT is ignored it is also matched to it there);
                     (2) when every GT of the image is ignored, all its detections are ignored.
    Returns tp, fp: (N, M, A, T, D) bool.
    """
    n, m_modes, d_slots, g_slots = scores.shape
    a_ranges = gt_ignore.shape[1]
    dev = scores.device
    thr = torch.tensor(IOU_THRESHOLDS, dtype=torch.float64, device=dev).clamp(max=1 - 1e-10)
    t_count = thr.numel()
    shape = (n, m_modes, a_ranges, t_count)
    ig = gt_ignore[:, None, :, None, :]  # (N, 1, A, 1, G)
    crowd = gt_crowd[:, None, None, None, :]
    valid = gt_valid[:, None, None, None, :]
    rank = torch.arange(g_slots, device=dev).expand(*shape, g_slots)
    gtm = torch.zeros(*shape, g_slots, dtype=torch.bool, device=dev)
    dtm = torch.zeros(*shape, d_slots, dtype=torch.bool, device=dev)
    dt_ig = torch.zeros(*shape, d_slots, dtype=torch.bool, device=dev)

    # Without any GT slot nothing matches (and argmax / one_hot need a non-empty last dimension).
    for d in range(d_slots if g_slots else 0):
        s = scores[:, :, d, None, None, :].expand(*shape, g_slots)
        cand = (
            (~gtm | crowd) & valid & (s >= thr[:, None]) & (s > 0) & det_valid[:, d, None, None, None, None]
        )
        # COCOeval stops at the first ignored GT once it holds a regular match (GTs sorted ignored-last):
        # the best regular GT wins, ignored GTs are only a fallback.
        regular = cand & ~ig
        chosen = torch.where(regular.any(-1, keepdim=True), regular, cand & ig)
        best, found = _last_best(chosen, s, rank)
        dtm[..., d] = found
        dt_ig[..., d] = found & ig.expand(*shape, g_slots).gather(-1, best[..., None])[..., 0]
        gtm |= torch.nn.functional.one_hot(best, g_slots).bool() & found[..., None]

    if densepose_rules and g_slots:
        last = t_count - 1
        ig_a = gt_ignore[:, None, :, :].expand(n, m_modes, a_ranges, g_slots)
        # COCOeval iterates GTs in ignored-last order here too, so a tie goes to the later of that order.
        sort_rank = ig_a.long() * g_slots + torch.arange(g_slots, device=dev)
        for d in range(d_slots):
            unmatched = ~dtm[..., last, d] & det_valid[:, d, None, None]
            b = box_iou[:, None, None, d, :].expand(n, m_modes, a_ranges, g_slots)
            avail = (~gtm[..., last, :] | gt_crowd[:, None, None, :]) & gt_valid[:, None, None, :]
            cand = avail & (b >= BOX_IGNORE_IOU) & unmatched[..., None]
            best, found = _last_best(cand, b, sort_rank)
            best_ig = ig_a.gather(-1, best[..., None])[..., 0]
            dt_ig[..., d] = torch.where(found[..., None], best_ig[..., None], dt_ig[..., d])
            take = found & best_ig
            dtm[..., last, d] |= take
            gtm[..., last, :] |= torch.nn.functional.one_hot(best, g_slots).bool() & take[..., None]
    if densepose_rules:
        all_ignored = (gt_ignore | ~gt_valid[:, None, :]).all(-1)  # (N, A); True without any GT
        dt_ig |= all_ignored[:, None, :, None, None]

    dt_ig |= ~dtm & det_out_of_area[:, None, :, None, :]
    det_ok = det_valid[:, None, None, None, :]
    return dtm & ~dt_ig & det_ok, ~dtm & ~dt_ig & det_ok


def count_gt(gt_ignore: Tensor, gt_valid: Tensor) -> Tensor:
    """(A,) int64 number of non-ignored GT per area range; gt_ignore (N, A, G), gt_valid (N, G)."""
    return (~gt_ignore & gt_valid[:, None, :]).sum(dim=(0, 2))


def collect(
    image_id: Tensor, score: Tensor, det_valid: Tensor, tp: Tensor, fp: Tensor, num_gt: Tensor
) -> MatchResult:
    """Flatten greedy_match's padded output to a MatchResult.

    image_id (N,), score (N, D), det_valid (N, D), tp/fp (N, M, A, T, D), num_gt (A,).
    Detections stay grouped by image in confidence order, the order COCOeval concatenates them in.
    """
    keep = det_valid.reshape(-1)
    d_slots = score.shape[1]
    return MatchResult(
        image_id=image_id[:, None].expand(-1, d_slots).reshape(-1)[keep],
        score=score.reshape(-1)[keep].double(),
        tp=tp.movedim(-1, 1).flatten(0, 1)[keep],
        fp=fp.movedim(-1, 1).flatten(0, 1)[keep],
        num_gt=num_gt,
    )


def accumulate(
    image_id: Tensor, score: Tensor, tp: Tensor, fp: Tensor, num_gt: Tensor
) -> tuple[Tensor, Tensor]:
    """COCOeval.accumulate over all matched detections.

    image_id, score: (D,); tp, fp: (D, M, A, T) bool; num_gt: (A,).
    Returns precision (M, A, T, R) and recall (M, A, T) float64, -1 where an area range has no GT.
    """
    dev = score.device
    d_count = score.numel()
    _, m_modes, a_ranges, t_count = tp.shape
    recall_thr = torch.tensor(RECALL_THRESHOLDS, dtype=torch.float64, device=dev)
    # pycocotools concatenates images by ascending id, then sorts by score with a stable sort.
    order = torch.sort(image_id, stable=True).indices
    order = order[torch.sort(-score[order], stable=True).indices]
    k = m_modes * a_ranges * t_count
    tp_sum = tp[order].reshape(d_count, k).double().cumsum(0).T  # (M*A*T, D)
    fp_sum = fp[order].reshape(d_count, k).double().cumsum(0).T
    npig = num_gt.double()[None, :, None].expand(m_modes, a_ranges, t_count).reshape(-1, 1)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + _EPS)
    # Interpolated precision: the best precision at any higher recall.
    pr = pr.flip(-1).cummax(-1).values.flip(-1)
    if d_count:
        idx = torch.searchsorted(rc.contiguous(), recall_thr.expand(k, -1).contiguous(), side="left")
        q = torch.where(
            idx < d_count, pr.gather(-1, idx.clamp(max=d_count - 1)), torch.zeros_like(idx, dtype=pr.dtype)
        )
        rec = rc[:, -1]
    else:
        q = torch.zeros(k, recall_thr.numel(), dtype=torch.float64, device=dev)
        rec = torch.zeros(k, dtype=torch.float64, device=dev)
    has_gt = (npig > 0)[:, 0]
    q = torch.where(has_gt[:, None], q, torch.full_like(q, -1.0))
    rec = torch.where(has_gt, rec, torch.full_like(rec, -1.0))
    return q.reshape(m_modes, a_ranges, t_count, -1), rec.reshape(m_modes, a_ranges, t_count)


def summarize(precision: Tensor, recall: Tensor) -> Tensor:
    """COCOeval's keypoint summary (the 10 STAT_NAMES) per mode: (M, A, T, R), (M, A, T) -> (M, 10)."""
    t50 = IOU_THRESHOLDS.index(0.5)
    t75 = min(range(len(IOU_THRESHOLDS)), key=lambda i: abs(IOU_THRESHOLDS[i] - 0.75))

    def mean(x: Tensor) -> Tensor:  # (M, ...) -> (M,), -1 where no GT (all entries are then -1)
        x = x.reshape(x.shape[0], -1)
        valid = x > -1
        total = torch.where(valid, x, torch.zeros_like(x)).sum(1)
        count = valid.sum(1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, -1.0))

    p, r = precision, recall
    return torch.stack(
        [
            mean(p[:, 0]),
            mean(p[:, 0, t50]),
            mean(p[:, 0, t75]),
            mean(p[:, 1]),
            mean(p[:, 2]),
            mean(r[:, 0]),
            mean(r[:, 0, t50]),
            mean(r[:, 0, t75]),
            mean(r[:, 1]),
            mean(r[:, 2]),
        ],
        dim=1,
    )
