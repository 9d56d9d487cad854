"""Optimizer and learning-rate schedule from the `optimizer` / `scheduler` config nodes (configs/optimizer/,
configs/scheduler/), each instantiated from its `_target_`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from hydra.utils import instantiate


def cosine_with_warmup(total_steps: int, warmup_steps: int = 0, floor: float = 0.0):
    """LR factor of a step: linear warmup from 0 over warmup_steps, then cosine from 1 down to floor at
    total_steps (short CPU runs gain most from ending at a small learning rate)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class CosineWithWarmup(torch.optim.lr_scheduler.LambdaLR):
    """`cosine_with_warmup` as a scheduler: lr x factor(step), down to final_lr_factor x lr at total_steps."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, final_lr_factor: float
    ) -> None:
        super().__init__(optimizer, cosine_with_warmup(total_steps, warmup_steps, final_lr_factor))


def build_optimization(
    params: Iterable[torch.nn.Parameter], optimizer: Mapping, scheduler: Mapping | None,
    total_steps: Callable[[], int],
):
    """What a LightningModule's configure_optimizers returns.

    optimizer: `_target_` and constructor arguments, called with `params`.
    scheduler: None, or `_target_` and constructor arguments, called with the optimizer, plus `interval`
    (Lightning's: step | epoch); `total_steps: null` is filled with total_steps() (asked for only then:
    Lightning's estimate may build the train DataLoader).
    """
    opt = instantiate(dict(optimizer), params=list(params), _convert_="all")
    if not scheduler:
        return opt
    sch = dict(scheduler)
    interval = sch.pop("interval")
    if "total_steps" in sch and sch["total_steps"] is None:
        sch["total_steps"] = total_steps()
    lr_scheduler = instantiate(sch, optimizer=opt, _convert_="all")
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, "interval": interval}}
