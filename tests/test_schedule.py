"""The learning-rate schedule: linear warmup, then cosine down to a floor, checked at hand-solved steps."""

from __future__ import annotations

import math

import pytest
import torch

from densehmr.optim import cosine_with_warmup


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    f = cosine_with_warmup(total_steps=110, warmup_steps=10, floor=0.1)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # past the end it stays at the floor


def test_no_warmup_starts_at_full_rate_and_decreases():
    f = cosine_with_warmup(total_steps=50)
    values = [f(s) for s in range(51)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_the_configured_schedules_are_built_from_their_targets():
    from hydra import compose, initialize_config_dir
    from torch import nn

    from densehmr.optim import CosineWithWarmup, build_optimization
    from densehmr.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=meshpose", "scheduler.warmup_steps=10"])
        paper = compose(config_name="train", overrides=["method=densereg", "experiment=paper_densereg"])
    params = list(nn.Linear(2, 1).parameters())
    asked = []
    built = build_optimization(params, cfg.optimizer, cfg.scheduler, lambda: asked.append(1) or 110)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == cfg.method.lr
    assert isinstance(schedule["scheduler"], CosineWithWarmup) and schedule["interval"] == "step" and asked == [1]
    f = cosine_with_warmup(total_steps=110, warmup_steps=10)
    for step in range(110):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.method.lr * f(step))
        optimizer.step()
        schedule["scheduler"].step()
    built = build_optimization(params, paper.optimizer, paper.scheduler, lambda: asked.append(2) or 0)
    assert isinstance(built["optimizer"], torch.optim.SGD) and built["optimizer"].defaults["momentum"] == 0.9
    assert isinstance(built["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.MultiStepLR)
    assert built["lr_scheduler"]["interval"] == "epoch" and asked == [1]  # no run length asked for
