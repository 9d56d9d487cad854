"""`make gpu-check`: its comparisons against hand-solved cases, its timing, its report, the one line
without CUDA, and the whole check run on the CPU at tiny sizes (`--dry-run`)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from densehmr import gpu_check
from densehmr.gpu_check import training
from densehmr.gpu_check.__main__ import main
from densehmr.gpu_check.forward import FP32_REL_TOL, ForwardResult, calibrate_batchnorm, compare, flatten
from densehmr.gpu_check.renderer import RenderCheck, RenderResult
from densehmr.gpu_check.report import write_report
from densehmr.gpu_check.settings import dry_run
from densehmr.gpu_check.training import StepTimer, TrainResult

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_it_says_so_in_one_line_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([]) == 0
    out = capsys.readouterr()
    assert out.err == "" and len(out.out.splitlines()) == 1 and "no CUDA device" in out.out


def test_flatten_names_nested_outputs():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    flat = flatten({"verts": a, "steps": [{"cam": b}, {"cam": c}], "none": None})
    assert list(flat) == ["verts", "steps.0.cam", "steps.1.cam"] and flat["steps.1.cam"] is c


def test_forward_tolerance_is_relative_to_the_output_scale():
    ref = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    # Four elements, one off by d: the 99.9th percentile (linear between order statistics) is 0.997 d.
    inside = compare("x", ref, ref + torch.tensor([[0.0, 2.0e-3], [0.0, 0.0]], dtype=torch.float64), None)
    assert math.isclose(inside.max_abs, 2.0e-3, rel_tol=1e-9) and inside.passed  # 0.997 x 2e-3 <= 1e-3 x 2
    assert math.isclose(inside.rel, 0.997 * 2.0e-3 / 2.0, rel_tol=1e-9)
    outside = compare("x", ref, ref + torch.tensor([[0.0, 0.0], [2.1e-3, 0.0]], dtype=torch.float64), None)
    assert math.isclose(outside.rel, 0.997 * 2.1e-3 / 2.0, rel_tol=1e-9) and not outside.passed
    # One element in 2000 off by a lot (a flipped argmax) passes; one in 500 does not.
    big = torch.ones(2000, dtype=torch.float64)
    assert compare("x", big, big.index_fill(0, torch.tensor([7]), 5.0), None).passed
    assert not compare("x", big, big.index_fill(0, torch.arange(0, 2000, 500), 5.0), None).passed
    tiny = compare("x", torch.zeros(3), torch.full((3,), 5e-6), torch.zeros(3))
    assert tiny.passed and math.isnan(tiny.amp_rel)  # under the absolute floor
    amp = compare("x", ref, ref, ref + 0.1)
    assert math.isclose(amp.amp_rel, 0.1 / 2.0, rel_tol=1e-6) and amp.passed
    assert calibrated_batchnorm_is_the_batchs()
    ints = compare("part", torch.arange(2000), torch.arange(2000).index_fill(0, torch.tensor([5]), 0), None)
    assert ints.passed and math.isnan(ints.rel)  # 1 of 2000 differs: 99.95% agree
    assert not compare("part", torch.arange(10), torch.zeros(10, dtype=torch.long), None).passed
    assert FP32_REL_TOL == 1e-3


def calibrated_batchnorm_is_the_batchs() -> bool:
    """After calibration the running statistics are the batch's (biased variance for the mean it
    subtracts, unbiased for the running one, as BatchNorm keeps them)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    image = torch.randn(2, 3, 8, 8) * 5 + 3
    calibrate_batchnorm(net, image)
    with torch.no_grad():
        features = net[0](image)
    mean, var = features.mean((0, 2, 3)), features.var((0, 2, 3), unbiased=True)
    bn = net[1]
    return (not net.training and torch.allclose(bn.running_mean, mean, atol=1e-5)
            and torch.allclose(bn.running_var, var, rtol=1e-4))


def test_step_timer_rates_steps_after_the_warm_up(tmp_path, monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 2.0, 2.5, 3.0])
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    timer = StepTimer(str(tmp_path / "t.json"), skip=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    trainer = SimpleNamespace(strategy=type("DDPStrategy", (), {})(), world_size=1, precision="bf16-mixed")
    timer.on_train_start(trainer, module)  # t = 0
    for loss in (3.0, 2.0, 1.5, 1.0, 0.5):  # steps end at 1, 1.5, 2, 2.5, 3 s
        timer.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, None, 0)
    timer.on_train_end(trainer, module)
    timing = __import__("json").loads((tmp_path / "t.json").read_text())
    assert timing["steps"] == 5 and timing["timed_steps"] == 4
    assert timing["steps_per_s"] == pytest.approx(3 / 1.5) and timing["final_loss"] == 0.5
    assert timing["seconds"] == 3.0 and timing["memory"] == "process peak RSS"
    assert (timing["strategy"], timing["world_size"]) == ("DDPStrategy", 1)


def test_report_states_every_failure(tmp_path):
    settings = dry_run()
    trains = [TrainResult("meshpose", "ok", steps=2, steps_per_s=1.5, batch_size=2, image_size=(64, 64),
                          backbone="hrnet_w32", final_loss=0.5, peak_memory_mb=100.0, seconds=3.0),
              TrainResult("pymaf", "failed", error="RuntimeError: boom")]
    forward = [ForwardResult("meshpose", [compare("verts", torch.ones(3), torch.ones(3) * 1.5, None)])]
    render = RenderResult([RenderCheck("face id agreement", 0.99, ">= 0.999", False)], {"rasterize": {"cpu": 1.0}})
    text = write_report(tmp_path / "r.md", settings, {"device": "CPU"}, trains, forward, render, 30.0).read_text()
    assert "Verdict: **FAIL**" in text and "DRY RUN" in text
    assert "| meshpose | hrnet_w32 | 64×64 | 2 | 2 | 1.50 | 3.0 |" in text
    assert "FAILED: RuntimeError: boom" in text
    assert "| meshpose | 1 | verts | verts | 5.0e-01 | 5.0e-01 | — | FAIL |" in text  # 0.5 everywhere
    assert "| face id agreement | 0.99 | >= 0.999 | FAIL |" in text


@pytest.mark.slow
def test_dry_run_runs_every_check_on_the_cpu(tmp_path):
    """What `make gpu-check DRY_RUN=1` runs: every method's paper experiment trained (DDP, bf16 mixed
    precision), compared CPU against CPU (so exactly equal) and the renderer, all passing."""
    report = tmp_path / "gpu_check.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", gpu_check.__name__, "--dry-run", "--out", str(report), "--work", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = report.read_text()
    assert "Verdict: **pass**" in text and "DRY RUN" in text
    for method in ("meshpose", "pymaf", "dct", "densereg"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {method} | ") and "64×64" in line)
        assert row.endswith("| DDPStrategy x1, bf16-mixed | ok |") and "| 2 | 2 |" in row  # batch 2, 2 steps
        forward = [line for line in text.splitlines() if line.startswith(f"| {method} | ") and "pass" in line]
        assert forward and "| 0.0e+00 | 0.0e+00 |" in forward[0]  # the same device computes the same numbers
    assert text.count("| pass |") >= 4 + 6
