"""The training pipeline end to end on a tiny generated dataset: configs compose, runs land where
docs/architecture.md says ("Runs"), one step gives the loss terms the config asks for, broken configs
fail with one clear line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from densehmr.methods.registry import method_names
from densehmr.train import CONFIG_DIR, train

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
# Ablations that change something (full.yaml names the default and is empty).
ABLATIONS = sorted(p.stem for p in (ROOT / "configs" / "ablation").glob("*.yaml") if OmegaConf.load(p))
METHODS = method_names()
# Terms that need an option beside a non-zero weight, as configs/method/<method>.yaml says.
OPTION_GATED = {
    ("meshpose", "upsampler"): lambda options: options["finetune_upsampler"],
    ("pymaf", "aux_iuv"): lambda options: options["aux_iuv"],
    ("densereg", "uv_bin"): lambda options: options["regression"] == "quantized",
}


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


def composed(cfg_overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=cfg_overrides)


def run(cfg_overrides: list[str]) -> dict:
    return train(composed(cfg_overrides))


class LossTermsRecorder(pl.Callback):
    """Writes the first training step's loss and its logged weighted terms to `path` (JSON)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.path.exists():
            return
        prefix = "train/loss_"
        terms = {k[len(prefix):]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
        self.path.write_text(json.dumps({"loss": float(outputs["loss"]), "terms": terms}))


def expected_terms(cfg: DictConfig) -> set[str]:
    """The loss terms a composed config switches on: those with a non-zero weight (DCT's dense term's
    weight is its option dense_weight), less those whose option is off (OPTION_GATED)."""
    name = cfg.method.name
    options = {**cfg.method.module, **(cfg.get(name) or {})}
    weights = dict(cfg.method.module.loss_weights)
    if name == "dct":
        weights["dense"] = options["dense_weight"]
    return {t for t, w in weights.items() if w != 0 and OPTION_GATED.get((name, t), lambda _: True)(options)}


def method_of(experiment: str) -> str:
    """The method an experiment is for: the one its name contains (paper_dct, meshpose_xs)."""
    found = [m for m in METHODS if m in experiment.split("_")]
    assert len(found) == 1, f"configs/experiment/{experiment}.yaml names no single method: {found}"
    return found[0]


def one_step(data: Path, tmp_path: Path, *extra: str) -> tuple[dict, set[str]]:
    """One training step under `extra`: the recorded loss and terms, and the terms its config expects."""
    record = tmp_path / "step.json"
    recorder = f"{{_target_:{__name__}.LossTermsRecorder,path:'{record}'}}"
    args = overrides(data, tmp_path / "run", *extra, "trainer=cpu", "+trainer.fast_dev_run=1",
                     "test_after_fit=false", "method.batch_size=2", f"trainer_extra.callbacks=[{recorder}]")
    cfg = composed(args)
    train(cfg)
    return json.loads(record.read_text()), expected_terms(cfg)


def assert_step(step: dict, expected: set[str]) -> None:
    """A finite loss, the sum of exactly the expected terms, each supervised (non-zero: the synthetic
    data carries every annotation) and finite."""
    assert math.isfinite(step["loss"])
    assert set(step["terms"]) == expected
    assert all(math.isfinite(v) and v > 0 for v in step["terms"].values()), step["terms"]
    assert step["loss"] == pytest.approx(sum(step["terms"].values()), rel=1e-4)


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
    step, expected = one_step(tiny_data, tmp_path, f"method={method_of(experiment)}", f"experiment={experiment}")
    assert_step(step, expected)


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_runs_one_step_without_its_terms(ablation, tiny_data, tmp_path):
    step, expected = one_step(tiny_data, tmp_path, "method=meshpose", f"ablation={ablation}", "image_size=[64,64]")
    assert_step(step, expected)
    assert {"vertex", "edge", "normal", "joints2d", "joints3d"} <= expected  # L3D is in every row


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
