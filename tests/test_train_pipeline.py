"""The training pipeline end to end on a tiny generated dataset: configs compose, runs land where
DESIGN says, broken configs fail with one clear line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from densehmr.train import CONFIG_DIR, train

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (ROOT / "configs" / "method").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return tiny_synthetic


def overrides(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.train.0.root={data / 'train'}",
        f"data.val.0.root={data / 'val'}",
        "data.num_workers=0",
        "method.batch_size=4",
        "logger=none",
        f"run_dir={run_dir}",
        *extra,
    ]


def run(cfg_overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=cfg_overrides)
    return train(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_one_step_and_writes_its_run(method, tiny_data, tmp_path):
    run_dir = tmp_path / "runs" / method / "r1"
    run(overrides(tiny_data, run_dir, f"method={method}", "trainer.max_epochs=1",
                  "trainer.check_val_every_n_epoch=1", "image_size=[64,64]"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "config.yaml").is_file()
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    expected = {"densepose/gps_ap", "densepose/gpsm_ap", "densepose/iou_ap"}
    assert expected <= set(metrics), sorted(metrics)
    assert all(isinstance(v, (float, str)) for v in metrics.values())


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs_one_step(experiment, tiny_data, tmp_path):
    run(overrides(tiny_data, tmp_path / "run", f"experiment={experiment}", "trainer=cpu",
                  "+trainer.fast_dev_run=1", "test_after_fit=false", "method.batch_size=2"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "densehmr.train", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_unknown_method_fails_with_one_clear_line(tmp_path):
    out = _cli("method=nonexistent", f"run_dir={tmp_path}")
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert "nonexistent" in lines[0] and "Traceback" not in out.stderr
    assert len(lines) <= 3


def test_missing_data_path_fails_with_one_clear_line(tmp_path):
    out = _cli("method=densereg", f"data.train.0.root={tmp_path / 'nowhere'}", f"run_dir={tmp_path / 'r'}",
               "logger=none")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "nowhere" in err[-1]


@pytest.mark.slow
def test_two_process_ddp_run_trains_and_evaluates(tiny_data, tmp_path):
    run_dir = tmp_path / "runs" / "densereg" / "ddp"
    out = _cli(
        "method=densereg", "trainer=ddp_cpu", "+trainer.max_steps=2", "logger=none", "image_size=[64,64]",
        "method.batch_size=2", "data.num_workers=0", f"data.train.0.root={tiny_data / 'train'}",
        f"data.val.0.root={tiny_data / 'val'}", f"run_dir={run_dir}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"densepose/gps_ap", "mask/iou"} <= set(metrics)
