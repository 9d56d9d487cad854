"""A run's metrics.json says how its training went (steps, budget, wall time, why it stopped), a run cut
short by the wall-clock guard says so last in its log and in the study tables, evaluating a run's
checkpoint reproduces its test metrics, and a resumed W&B run continues the same W&B run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from densehmr.studies.common import compose_train


def _settings(data: Path, run_dir: Path) -> list[str]:
    # Options the evaluation cannot guess from configs/train.yaml: the method's width, the precision, the data.
    return ["method=dct", "backbone=mobilenet_v2", "image_size=[64,64]", "dct.hidden=64",
            "trainer.precision=bf16-mixed", f"data.train.0.root={data / 'train'}", f"data.val.0.root={data / 'val'}",
            "data.num_workers=0", "data.samples_per_epoch=4", "method.batch_size=2", "logger=none",
            "trainer_extra.checkpoint_every_n_steps=0", f"run_dir={run_dir}"]


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory) -> Path:
    from densehmr.train import train

    run = tmp_path_factory.mktemp("record") / "run"
    train(compose_train([*_settings(tiny_synthetic, run), "trainer.max_steps=3"]))
    return run


def test_metrics_json_records_steps_budget_wall_time_and_why_training_stopped(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["run/steps"] == metrics["run/max_steps"] == 3
    assert metrics["run/stopped_by"] == "max_steps" and 0 < metrics["run/wall_s"] < 3600
    assert "mesh/pve" in metrics


def test_evaluating_a_runs_checkpoint_reproduces_its_test_metrics(trained):
    from densehmr.evaluate import evaluate

    ckpt = next((trained / "checkpoints").glob("epoch=*.ckpt"))  # the checkpoint the run tested
    metrics = evaluate(compose_train(["method=dct", f"ckpt_path='{ckpt}'", "run_id=again"]))
    run = json.loads((trained / "metrics.json").read_text())
    want = {k: v for k, v in run.items() if not k.startswith(("val/", "run/"))}
    got = json.loads((trained / "eval-again" / "metrics.json").read_text())
    assert got == want and metrics.keys() == {k for k in want if not k.endswith("/protocol")}


def test_a_run_stopped_by_the_wall_clock_says_so_last_in_its_log_and_in_metrics_json(tiny_synthetic, tmp_path,
                                                                                    caplog):
    from densehmr.train import train

    run = tmp_path / "run"
    cfg = compose_train([*_settings(tiny_synthetic, run), "trainer.max_steps=100000", "trainer.max_time=00:00:00:01",
                         "test_after_fit=false"])
    with caplog.at_level(logging.INFO):
        train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run/stopped_by"] == "max_time" and 0 < metrics["run/steps"] < metrics["run/max_steps"] == 100000
    last = caplog.records[-1]
    assert last.levelno == logging.WARNING and last.getMessage().startswith(
        f"TRUNCATED: training stopped at the wall-clock limit trainer.max_time=00:00:00:01 after "
        f"{int(metrics['run/steps'])} of 100000 steps")


def test_a_run_without_a_step_budget_that_stops_at_the_wall_clock_is_not_reported_truncated(tmp_path, caplog):
    from densehmr.run_record import report_truncation

    record = {"run/steps": 601.0, "run/wall_s": 900.0, "run/stopped_by": "max_time"}  # max_steps=-1: no budget
    with caplog.at_level(logging.WARNING):
        report_truncation(record, "00:00:15:00", tmp_path)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        report_truncation({**record, "run/max_steps": 900.0}, "00:00:15:00", tmp_path)
    assert caplog.records[-1].getMessage().startswith("TRUNCATED: training stopped at the wall-clock limit "
                                                     "trainer.max_time=00:00:15:00 after 601 of 900 steps")


def test_study_tables_mark_the_methods_a_wall_clock_guard_cut_short():
    from densehmr.studies.tables import METRIC_COLUMNS, aggregate, markdown_table

    full = {"mesh/pve": 0.3, "run/steps": 900, "run/stopped_by": "max_steps"}
    short = {"mesh/pve": 0.4, "run/steps": 601, "run/stopped_by": "max_time"}
    rows = [("dct", aggregate([full, full])), ("meshpose", aggregate([full, short]))]
    assert rows[0][1]["truncated_seeds"] == 0 and rows[1][1]["truncated_seeds"] == 1
    table = markdown_table(rows, METRIC_COLUMNS, "method")
    lines = table.splitlines()
    assert lines[2].startswith("| dct |") and lines[3].startswith("| meshpose † |")
    assert lines[-1] == ("† stopped by the wall-clock guard (trainer.max_time) before its step budget in 1 of 2 "
                         "seeds: trained fewer steps than the other rows.")


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    from densehmr.runs import build_logger
    from densehmr.train import record_run_settings

    cfg = compose_train(["method=dct", "logger=wandb"])
    record_run_settings(cfg)
    assert len(cfg.logger.id) == 8 and cfg.trainer_extra.threads >= 1
    logger = build_logger(cfg, tmp_path)
    assert logger._wandb_init["id"] == cfg.logger.id and logger._wandb_init["resume"] == "allow"
    other = compose_train(["method=dct", "logger=wandb"])
    record_run_settings(other)
    assert other.logger.id != cfg.logger.id


def test_a_study_runs_an_interrupted_training_again(tmp_path):
    from densehmr.studies.grid import read_metrics

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"run/steps": 40.0, "run/stopped_by": "interrupted"}))
    assert read_metrics(path) is None
    path.write_text(json.dumps({"run/steps": 40.0, "run/stopped_by": "nonfinite"}))  # it would diverge again
    assert read_metrics(path) == {"run/steps": 40.0, "run/stopped_by": "nonfinite"}
