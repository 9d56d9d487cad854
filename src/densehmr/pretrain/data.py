"""The pretraining's data: the train datasets of a data config, split by image into train and held-out."""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Subset

from datamodules.datamodule import DenseHMRDataModule

log = logging.getLogger(__name__)


class HeldOutTrainData(DenseHMRDataModule):
    """A DenseHMRDataModule that reads only its `train` datasets.

    Images whose id is a multiple of `holdout_every` (and all their people) are held out: validation reads
    them without augmentation, training never draws them. The config's val and test datasets are never read.
    """

    def __init__(self, holdout_every: int = 20, **kwargs: Any) -> None:
        kwargs["val"], kwargs["test"] = [], []
        super().__init__(**kwargs)
        if holdout_every < 2:
            raise ValueError(f"holdout_every must be >= 2, got {holdout_every}")
        self.holdout_every = holdout_every
        self.specs["val"] = self.specs["test"] = list(self.specs["train"])

    def _build_split(self, split: str) -> list[Subset]:
        held_out = split != "train"
        subsets = [
            Subset(dataset, [i for i in range(len(dataset)) if self.is_held_out(dataset.reader.raw(i)) == held_out])
            for dataset in super()._build_split(split)
        ]
        kept = sum(len(s) for s in subsets)
        log.info("%s: %d people %s (one image in %d held out)", split, kept, "held out" if held_out else "to train on",
                 self.holdout_every)
        return subsets

    def is_held_out(self, raw) -> bool:
        return raw.image_id % self.holdout_every == 0
