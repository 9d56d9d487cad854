"""The learning-rate schedule: linear warmup, then cosine down to a floor, checked at hand-solved steps."""

from __future__ import annotations

import math

import pytest

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
