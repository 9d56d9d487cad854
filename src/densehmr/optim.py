"""Optimizer and learning-rate schedule from the top-level `optimizer` / `scheduler` config nodes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def cosine_with_warmup(total_steps: int, warmup_steps: int = 0, floor: float = 0.0):
    """LR factor of a step: linear warmup from 0 over warmup_steps, then cosine from 1 down to floor at
    total_steps (short CPU runs gain most from ending at a small learning rate)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimization(
    params: Iterable[torch.nn.Parameter], optimizer: Mapping, scheduler: Mapping | None,
    total_steps: Callable[[], int],
):
    """What a LightningModule's configure_optimizers returns.

    optimizer: {name: adam|adamw|sgd, **constructor arguments}.
    scheduler: None, {name: cosine, warmup_steps, final_lr_factor} stepped per step over total_steps() (asked
    for only then: Lightning's estimate may build the train DataLoader), or
    {name: step, milestones, gamma} (epochs).
    """
    cfg = dict(optimizer)
    name = cfg.pop("name", "adam").lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
    opt = OPTIMIZERS[name](params, **cfg)
    if not scheduler:
        return opt
    sch = dict(scheduler)
    kind = sch.pop("name")
    if kind == "cosine":
        factor = cosine_with_warmup(total_steps(), sch.get("warmup_steps", 0), sch.get("final_lr_factor", 0.0))
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
    if kind == "step":
        if sch.get("warmup_steps"):
            raise ValueError("scheduler.warmup_steps applies to the cosine schedule only")
        lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=sch["milestones"], gamma=sch["gamma"])
        return {"optimizer": opt, "lr_scheduler": lr_scheduler}
    raise ValueError(f"unknown scheduler {kind!r}: expected cosine or step")
