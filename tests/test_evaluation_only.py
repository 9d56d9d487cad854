"""Evaluation-only options in the ablation grids: one training per seed, one evaluation per value, resumable;
the declared options really leave training alone, and densehmr.evaluate applies them to the loaded model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from batch_factory import make_batch
from omegaconf import OmegaConf

from densehmr.studies import ablation, report, sweep
from densehmr.studies.grid import EVALUATE, TRAIN, Cell, run_grid

DECODINGS = ("barycentric", "closest", "global_average")
SEEDS = (0, 1, 2)
# What the fake evaluation scores per decoding: any numbers that differ.
DECODING_AP = {"barycentric": 0.30, "closest": 0.20, "global_average": 0.10}


def write_grid(folder: Path, **extra) -> Path:
    """A MeshPose grid over the UV decoding, three seeds, decoding declared evaluation-only."""
    grid = {"name": "decoding", "description": "decodings", "method": "grid",
            "command": ["${env}", "${interpreter}", "-m", "densehmr.train", "${args_no_hyphens}"],
            "parameters": {"method": {"value": "meshpose"}, "meshpose.uv_decoding": {"values": list(DECODINGS)},
                           "seed": {"values": list(SEEDS)}},
            "evaluation_only": ["meshpose.uv_decoding"], **extra}
    path = folder / "decoding.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def option(cell: Cell, key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in cell.args() if a.startswith(key + "=")), None)


def fake_runner(calls: list[Cell]):
    """Trains nothing: a training writes a checkpoint naming its seed and that model's metrics; an evaluation
    reads the checkpoint it was given and scores the model (mesh error: the model's) and the decoding (AP)."""

    def run(cell: Cell, log: Path) -> int:
        calls.append(cell)
        log.write_text("")
        if cell.entry == TRAIN:
            ckpt = cell.run_dir / "checkpoints" / "last.ckpt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_text(str(cell.seed))
            model = cell.seed
        else:
            model = int(Path(option(cell, "ckpt_path")).read_text())
        decoding = option(cell, "meshpose.uv_decoding") or "barycentric"
        metrics = {"mesh/pa_mpjpe": 100.0 + 10 * model, "vertexpose/densepose/gps_ap": DECODING_AP[decoding]}
        (cell.run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 0

    return run


def no_canonical(method, overrides, shared=()):
    return list(overrides)


def test_an_evaluation_only_option_trains_each_seed_once_and_evaluates_each_value(tmp_path):
    studies = {"decoding": sweep.load_sweep(write_grid(tmp_path))}
    cells, tables = ablation.plan(studies, None, ["logger=csv"], tmp_path / "runs", canonical=no_canonical)
    calls: list[Cell] = []
    results = run_grid(cells, runner=fake_runner(calls), progress=False)
    assert all(r.status == "done" for r in results)
    trainings = [c for c in calls if c.entry == TRAIN]
    evaluations = [c for c in calls if c.entry == EVALUATE]
    assert sorted(c.seed for c in trainings) == list(SEEDS)
    assert len(evaluations) == len(SEEDS) * len(DECODINGS)
    assert all(option(c, "meshpose.uv_decoding") is None for c in trainings)  # trained at the base setting
    for seed in SEEDS:
        (trained,) = [c for c in trainings if c.seed == seed]
        mine = [c for c in evaluations if c.seed == seed]
        assert {c.requires for c in mine} == {trained.run_dir / "checkpoints" / "last.ckpt"}
        assert sorted(option(c, "meshpose.uv_decoding") for c in mine) == sorted(DECODINGS)
        # The commands differ by the decoding (and where each writes) alone.
        varying = ("meshpose.uv_decoding=", "run_id=", "run_dir=")
        assert len({tuple(a for a in c.args() if not a.startswith(varying)) for c in mine}) == 1

    rows = ablation.study_results(tables, results, studies)["decoding"]["rows"]
    assert list(rows) == [f"meshpose.uv_decoding={d}" for d in DECODINGS]
    runs = [str(tmp_path / "runs" / "meshpose" / f"seed{s}") for s in SEEDS]
    for decoding in DECODINGS:
        row = rows[f"meshpose.uv_decoding={decoding}"]
        assert row["evaluation_only"] == [f"meshpose.uv_decoding={decoding}"] and row["trained_runs"] == runs
        assert row["seeds"] == list(SEEDS) and row["vertexpose/densepose/gps_ap"] == pytest.approx(
            DECODING_AP[decoding])
        # Every row scores the same three models: mean (100 + 110 + 120) / 3 and their spread, whatever the decoding.
        assert row["mesh/pa_mpjpe"] == pytest.approx(110.0) and row["mesh/pa_mpjpe_std"] == pytest.approx(10.0)
        assert row["vertexpose/densepose/gps_ap_std"] == pytest.approx(0.0)


def test_a_rerun_skips_finished_evaluations_and_redoes_those_of_a_retrained_checkpoint(tmp_path):
    studies = {"decoding": sweep.load_sweep(write_grid(tmp_path))}
    cells, _ = ablation.plan(studies, None, ["logger=csv"], tmp_path / "runs", canonical=no_canonical)
    run_grid(cells, runner=fake_runner([]), progress=False)

    calls: list[Cell] = []
    assert {r.status for r in run_grid(cells, runner=fake_runner(calls), progress=False)} == {"skipped"}
    assert calls == []

    closest = next(c for c in cells if c.seed == 1 and option(c, "meshpose.uv_decoding") == "closest")
    closest.metrics_path.unlink()  # an evaluation that did not finish
    run_grid(cells, runner=fake_runner(calls), progress=False)
    assert calls == [closest]

    calls.clear()  # seed 2's model trained again (e.g. after its metrics were lost): its evaluations are stale
    trained = next(c for c in cells if c.seed == 2 and c.entry == TRAIN)
    trained.metrics_path.unlink()
    hour_ago = time.time() - 3600  # the evaluations were made before (whatever the file system's clock grain)
    for c in cells:
        if c.seed == 2 and c.entry == EVALUATE:
            os.utime(c.metrics_path, (hour_ago, hour_ago))
    run_grid(cells, runner=fake_runner(calls), progress=False)
    assert [(c.entry, c.seed) for c in calls] == [(TRAIN, 2)] + [(EVALUATE, 2)] * len(DECODINGS)


def test_tables_and_report_mark_the_evaluated_rows(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    studies = {"meshpose_uv_decoding": sweep.load_sweep("meshpose_uv_decoding")}
    cells, tables = ablation.plan(studies, None, [*ablation.DEFAULT_OVERRIDES], runs)
    run_grid(cells, runner=fake_runner([]), progress=False)
    code = ablation.main(["--tables", "meshpose_uv_decoding", "--out", str(out), "--runs", str(runs),
                          "--no-progress"])
    assert code == 0
    md = (out / "ablation.md").read_text()
    assert "| meshpose.uv_decoding=closest † | 20.0 ± 0.0 | 105.0 ± 7.1 |" in md
    note = next(line for line in md.splitlines() if line.startswith("† "))
    models = ", ".join(f"`{runs / 'meshpose' / f'seed{s}'}`" for s in (0, 1))
    assert f"evaluations of the trained models ({models}, one per seed) with `meshpose.uv_decoding` set" in note
    text = report.report({"compare": {}, "ablation": json.loads((out / "ablation.json").read_text())})
    line = ("| vertexpose/densepose/gps_ap: meshpose.uv_decoding=barycentric ≥ meshpose.uv_decoding=closest † "
            "| 30.0 ± 0.0 | 20.0 ± 0.0 | +10.0 | 0.0 | agree |")
    assert line in text and report.SAME_MODELS in text


def test_trained_rows_are_not_marked_as_evaluations():
    trained = {"evaluation_only": [], "trained_runs": ["r/seed0"]}
    evaluated = {"evaluation_only": ["x.y=1"], "trained_runs": ["r/seed0"]}
    assert not report.same_models({"a": trained, "b": trained})
    assert not report.same_models({"a": evaluated, "b": {**evaluated, "trained_runs": ["other/seed0"]}})
    assert report.same_models({"a": evaluated, "b": {**evaluated, "evaluation_only": ["x.y=2"]}})
    assert ablation.evaluation_note({"row": trained}) == ""


def test_the_decode_grid_evaluates_the_quantized_models_of_the_regression_grid(tmp_path):
    names = ("densereg_regression", "densereg_decode")
    cells, tables = ablation.plan({n: sweep.load_sweep(n) for n in names}, None, ["logger=csv"], tmp_path,
                                  canonical=no_canonical)
    trained = sorted({c.name for c in cells if c.entry == TRAIN})
    assert trained == ["densereg-regression-direct", "densereg-regression-quantized"]
    assert len(cells) == 2 * (2 + 2)  # 2 seeds: direct and quantized trained, quantized evaluated hard and soft
    quantized = dict((r.label, c) for r, c in tables["densereg_regression"])["densereg.regression=quantized"]
    for row, by_seed in tables["densereg_decode"]:
        assert row.evaluate == (row.label,) and row.train == ("densereg.regression=quantized",)
        assert all(c.requires == quantized[s].run_dir / "checkpoints" / "last.ckpt" for s, c in by_seed.items())


@pytest.mark.parametrize("listed, problem", [(["meshpose.gain"], "'meshpose.gain' is not one of the grid's"),
                                             (["seed"], "'seed' is not one of"),
                                             ("meshpose.uv_decoding", "expected a list")])
def test_a_bad_evaluation_only_list_is_one_line_naming_file_and_field(tmp_path, listed, problem):
    path = write_grid(tmp_path, evaluation_only=listed)
    with pytest.raises(ValueError) as err:
        sweep.load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: evaluation_only: ") and problem in message and "\n" not in message


def test_wandb_gets_the_grid_without_the_evaluation_only_key():
    s = sweep.load_sweep("meshpose_uv_decoding")
    config = sweep.wandb_config(s, ["trainer.max_steps=5"])
    assert "evaluation_only" not in config and "evaluation_only" in s
    assert config["command"][-1] == "trainer.max_steps=5" and config["parameters"] == s["parameters"]


DECLARED = [(name, key) for name in sweep.sweep_names() for key in sweep.evaluation_only(sweep.load_sweep(name))]


@pytest.mark.slow
@pytest.mark.parametrize("name, key", DECLARED)
def test_a_declared_evaluation_only_option_leaves_training_unchanged(body, name, key):
    """Each value of the option builds the same network (names, shapes) with the same loss and gradients on a
    batch: a checkpoint trained at one value is the checkpoint every value would have trained."""
    from densehmr.runs import build_method
    from densehmr.studies.common import compose_train

    s = sweep.load_sweep(name)
    values = sweep.parameter_values(s)
    fixed = [sweep.override(k, v[0]) for k, v in values.items() if k not in (key, "seed")]
    base = compose_train([*fixed, "image_size=[64,64]", "logger=none"])
    batch = make_batch(body, n=2, size=(64, 64), seed=0)
    trained = []
    for value in values[key]:
        cfg = base.copy()
        OmegaConf.update(cfg, key, value)
        torch.manual_seed(0)
        model = build_method(cfg)
        loss, _ = model.compute_loss(model(batch["image"]), batch, model.targets(batch))
        loss.backward()
        trained.append((value, loss.detach(), {k: v.shape for k, v in model.state_dict().items()},
                        {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    (_, loss0, shapes0, grads0), *others = trained
    assert grads0
    for value, loss, shapes, grads in others:
        assert shapes == shapes0, value
        torch.testing.assert_close(loss, loss0, msg=f"{key}={value}")
        assert grads.keys() == grads0.keys()
        for k, g in grads.items():
            torch.testing.assert_close(g, grads0[k], msg=f"{key}={value}: gradient of {k}")


@pytest.mark.slow
def test_evaluate_applies_the_option_to_the_loaded_checkpoint(body, tiny_synthetic, tmp_path, monkeypatch):
    """`python -m densehmr.evaluate` with the option set: the checkpoint's weights, the option's decoding, also
    where the option names today's default and the run was saved with another value; the mesh (which no
    decoding touches) scores the same either way."""
    from densehmr.evaluate import evaluate
    from densehmr.geometry.uv_decoding import UVDecoder
    from densehmr.runs import build_method
    from densehmr.studies.common import compose_train

    run = tmp_path / "run"
    data = [f"data.train.0.root={tiny_synthetic / 'train'}", f"data.val.0.root={tiny_synthetic / 'val'}",
            "data.num_workers=0", "method.batch_size=2", "image_size=[64,64]", "logger=none", f"run_dir={run}"]
    cfg = compose_train(["method=meshpose", *data, "meshpose.uv_decoding=closest"])
    torch.manual_seed(0)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": build_method(cfg).state_dict()}, ckpt)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    decoded: list[str] = []
    decode_maps = UVDecoder.decode_maps
    monkeypatch.setattr(UVDecoder, "decode_maps", lambda self, logits, fg, mode: decoded.append(mode) or
                        decode_maps(self, logits, fg, mode))
    scores = {}
    for decoding in ("barycentric", "global_average"):
        decoded.clear()
        overrides = ["method=meshpose", *data, f"meshpose.uv_decoding={decoding}", f"ckpt_path={ckpt}",
                     f"run_id=uv_decoding_{decoding}"]
        evaluate(compose_train(overrides), overrides)
        assert decoded and set(decoded) == {decoding}
        scores[decoding] = json.loads((run / f"eval-uv_decoding_{decoding}" / "metrics.json").read_text())
    decoded.clear()
    evaluate(compose_train(["method=meshpose", *data, f"ckpt_path={ckpt}", "run_id=as_saved"]))
    assert set(decoded) == {"closest"}  # nothing named: the run's own setting, so its numbers reproduce
    mesh = {k: v for k, v in scores["barycentric"].items() if k.startswith("mesh/")}
    assert mesh and all(scores["global_average"][k] == pytest.approx(v) for k, v in mesh.items())
