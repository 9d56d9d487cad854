"""Base class of the COCO-style AP metrics: DDP-safe states and the AP/AR summary."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from densehmr.metrics.coco_matching import AREA_RANGES, IOU_THRESHOLDS, MatchResult, accumulate, summarize


def pad_stack(items: Sequence[Tensor], fill: float | bool, length: int | None = None) -> Tensor:
    """Stack (n_i, ...) tensors into (N, max n_i, ...), padding with `fill`."""
    length = max((t.shape[0] for t in items), default=0) if length is None else length
    first = items[0]
    out = torch.full((len(items), length, *first.shape[1:]), fill, dtype=first.dtype, device=first.device)
    for i, t in enumerate(items):
        out[i, : t.shape[0]] = t
    return out


def padded_field(
    groups: Sequence[Sequence[Mapping]],
    value: Callable[[Mapping], object],
    dtype: torch.dtype,
    fill,
    width=None,
) -> Tensor:
    """(N, max n_i[, width]) tensor of value(item) over the items of each group (an image's GT or
    detections), padded with `fill`."""
    rows = []
    for group in groups:
        t = torch.tensor([value(x) for x in group], dtype=dtype)
        rows.append(
            t if width is None else t.reshape(len(group), *((width,) if isinstance(width, int) else width))
        )
    return pad_stack(rows, fill)


def by_confidence(dets: Sequence[Mapping], max_dets: int) -> list[Mapping]:
    """Detections sorted by score, highest first, ties in given order (a stable sort), cut to max_dets."""
    return sorted(dets, key=lambda d: -float(d["score"]))[:max_dets]


class CocoAPMetric(Metric):
    """Matching happens per image in `update`, where all of an image's GT and detections are at hand;
    the states hold only per-detection outcomes (plus GT counts), so a DDP gather needs no image data.

    States: `detections`, a list of (D, 2 + 2·M·A·T) float64 rows [image id, score, tp flags, fp flags],
    concatenated across processes; `num_gt` (A,), summed. Each image's GT and detections must arrive in
    one update call. Every process must call update at least once before compute.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_modes: int, max_dets: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_modes = num_modes
        self.max_dets = max_dets
        self.add_state("detections", default=[], dist_reduce_fx="cat")
        self.add_state(
            "num_gt", default=torch.zeros(len(AREA_RANGES), dtype=torch.long), dist_reduce_fx="sum"
        )
        self._next_crop_id = 0

    def update(self, images: Sequence[Mapping] | MatchResult, gts=None, dts=None) -> None:
        """Image-level update: images[i] is a COCO image entry (`id`, and `height`, `width` where masks
        are compared), gts[i] / dts[i] the GT annotations / detections of that image as in COCO JSON.

        update_crops comes through here with its crops already matched (a MatchResult).
        """
        if not isinstance(images, MatchResult) and not images:
            return
        matched = images if isinstance(images, MatchResult) else self._match_images(images, gts, dts)
        rows = torch.cat(
            [
                matched.image_id.double()[:, None],
                matched.score.double()[:, None],
                matched.tp.flatten(1).double(),
                matched.fp.flatten(1).double(),
            ],
            dim=1,
        )
        self.detections.append(rows.to(self.device))
        self.num_gt += matched.num_gt.to(self.num_gt.device)

    @abstractmethod
    def _match_images(self, images: Sequence[Mapping], gts, dts) -> MatchResult:
        """Match the detections of a list of images to their GT."""

    def _crop_ids(self, batch: int, ids: Tensor | None, device: torch.device) -> Tensor:
        """Image ids of a batch of crops: the given ones (dataset indices give the same order of tied
        scores whatever the process split) or a running count."""
        if ids is not None:
            return ids.to(device=device, dtype=torch.long)
        start, self._next_crop_id = self._next_crop_id, self._next_crop_id + batch
        return torch.arange(start, start + batch, device=device)

    def _stats(self) -> Tensor:
        """(M, 10) COCO summary per mode (STAT_NAMES order); -1 where there is no GT."""
        a_count, t_count = len(AREA_RANGES), len(IOU_THRESHOLDS)
        k = self.num_modes * a_count * t_count
        rows = self.detections
        if isinstance(rows, list):
            rows = (
                torch.cat(rows)
                if rows
                else torch.zeros(0, 2 + 2 * k, dtype=torch.float64, device=self.device)
            )
        rows = rows.reshape(-1, 2 + 2 * k)
        shape = (-1, self.num_modes, a_count, t_count)
        precision, recall = accumulate(
            rows[:, 0].long(),
            rows[:, 1],
            rows[:, 2 : 2 + k].bool().reshape(shape),
            rows[:, 2 + k :].bool().reshape(shape),
            self.num_gt,
        )
        return summarize(precision, recall)

    def reset(self) -> None:
        super().reset()
        self._next_crop_id = 0
