"""The study tooling (densehmr.studies): the grid runner, seed aggregation, the compare/ablation tables, the
claims report and the sweep files. No training here except one tiny Hydra multirun."""

import itertools
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from densehmr.studies import ablation, compare, grid, report, sweep
from densehmr.studies.common import compose_train, split_overrides
from densehmr.studies.grid import Cell, CellResult, run_grid, statuses, timing
from densehmr.studies.tables import aggregate, commit_lines, format_value, markdown_table, wall_time

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sweep.sweep_names()


def write_metrics(run_dir: Path, metrics: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def fake_runner(codes: dict[str, int], calls: list[str]):
    """A runner that trains nothing: logs a few lines, writes metrics.json unless its exit code is non-zero."""

    def run(cell: Cell, log: Path) -> int:
        calls.append(cell.name)
        code = codes.get(cell.name, 0)
        log.write_text("starting\nEpoch 0: 10%\rEpoch 0: 50%\nTraceback (most recent call last):\nboom\n")
        if code == 0:
            write_metrics(cell.run_dir, {"densepose/gps_ap": 0.5})
        return code

    return run


# -- grid ---------------------------------------------------------------------------------------------------


def test_grid_skips_finished_cells_and_goes_on_after_a_crash(tmp_path, capsys):
    cells = [Cell(n, "dct", ("logger=none",), 0, tmp_path / n) for n in ("a", "b", "c")]
    write_metrics(cells[0].run_dir, {"densepose/gps_ap": 0.1})  # finished before
    calls: list[str] = []
    results = run_grid(cells, runner=fake_runner({"b": 3}, calls), progress=False)
    assert calls == ["b", "c"]
    assert [r.status for r in results] == ["skipped", "failed", "done"]
    assert results[1].returncode == 3 and results[1].tail[-1] == "boom"
    assert (tmp_path / "b" / "train.out").is_file()
    err = capsys.readouterr().err
    assert "b seed=0: failed with exit code 3" in err and "boom" in err and "1 done, 1 skipped, 1 failed" in err

    calls.clear()  # again: only the crashed cell runs
    results = run_grid(cells, runner=fake_runner({}, calls), progress=False)
    assert calls == ["b"] and [r.status for r in results] == ["skipped", "done", "skipped"]


def test_a_collecting_grid_runs_nothing_and_reports_the_unfinished_cells(tmp_path, capsys):
    cells = [Cell(n, "dct", ("logger=none",), 0, tmp_path / n) for n in ("a", "b")]
    write_metrics(cells[0].run_dir, {"densepose/gps_ap": 0.1})
    calls: list[str] = []
    results = run_grid(cells, runner=fake_runner({}, calls), progress=False, run=False)
    assert calls == [] and [r.status for r in results] == ["skipped", "not run"]
    assert [r.ok for r in results] == [True, False] and not (tmp_path / "b").exists()
    err = capsys.readouterr().err
    assert "1 skipped" in err and "1 not run" in err


def test_grid_reruns_a_cell_made_by_another_command_and_keeps_the_old_one(tmp_path):
    old = Cell("a", "dct", ("trainer.max_steps=5",), 0, tmp_path / "a")
    run_grid([old], runner=fake_runner({}, []), progress=False)
    new = Cell("a", "dct", ("trainer.max_steps=50",), 0, tmp_path / "a")
    calls: list[str] = []
    assert [r.status for r in run_grid([new], runner=fake_runner({}, calls), progress=False)] == ["done"]
    assert calls == ["a"] and (tmp_path / "a.replaced-1" / "metrics.json").is_file()
    assert json.loads((tmp_path / "a" / "cell.json").read_text())["args"] == new.args()


def test_cells_record_the_commit_they_ran_and_compare_names_mixed_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "git_commit", lambda: "aaaaaaaaaaaa")
    cells = [Cell(n, "dct", ("logger=none",), 0, tmp_path / n) for n in ("a", "b")]
    run_grid(cells, runner=fake_runner({}, []), progress=False)
    monkeypatch.setattr(grid, "git_commit", lambda: "bbbbbbbbbbbb")
    (tmp_path / "b" / "metrics.json").unlink()  # b runs again, at the later commit; a is skipped
    results = run_grid(cells, runner=fake_runner({}, []), progress=False)
    assert [(r.status, r.commit) for r in results] == [("skipped", "aaaaaaaaaaaa"), ("done", "bbbbbbbbbbbb")]
    table = statuses(results)
    assert [c["git_commit"] for c in table.values()] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    data = {"cells": table, "settings": {"git_commit": "bbbbbbbbbbbb"}}
    assert commit_lines(data) == ["Cells ran at commit `aaaaaaaaa`, except b `bbbbbbbbb`.", ""]
    table["c"] = {**table[str(tmp_path / "a")], "name": "c"}  # two cells at aaaa: it is the usual one
    assert commit_lines(data) == ["Cells ran at commit `aaaaaaaaa`, except b `bbbbbbbbb`.", ""]
    data["cells"] = statuses(results[1:])
    assert commit_lines(data) == []
    data["cells"] = statuses(results)  # a row whose seeds ran different code names the seed
    a_cell, b_cell = data["cells"][str(tmp_path / "a")], data["cells"][str(tmp_path / "b")]
    data["cells"].update({"c0": {**a_cell, "name": "c"}, "c1": {**a_cell, "name": "c", "seed": 1},
                          "a1": {**b_cell, "name": "a", "seed": 1}})
    assert commit_lines(data) == ["Cells ran at commit `aaaaaaaaa`, except b `bbbbbbbbb`, a seed 1 `bbbbbbbbb`.", ""]


def test_grid_resumes_a_training_its_command_left_unfinished_and_restarts_one_without_checkpoint(tmp_path, monkeypatch):
    cells = [Cell(n, "dct", ("trainer.max_steps=50",), 0, tmp_path / n) for n in ("a", "b")]
    seen: list[Cell] = []

    def killed_after_a_checkpoint(cell: Cell, log: Path) -> int:
        seen.append(cell)
        (cell.run_dir / "config.yaml").write_text("method: {name: dct}\n")
        if cell.name == "a":
            (cell.run_dir / "checkpoints").mkdir()
            (cell.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
        return -9

    monkeypatch.setattr(grid, "git_commit", lambda: "aaaaaaaaaaaa")
    run_grid(cells, runner=killed_after_a_checkpoint, progress=False)
    monkeypatch.setattr(grid, "git_commit", lambda: "bbbbbbbbbbbb")  # the code changed in between
    first = json.loads((tmp_path / "a" / "cell.json").read_text())
    os.utime(tmp_path / "a" / "checkpoints" / "last.ckpt", (first["started"] + 30.0,) * 2)
    seen.clear()
    results = run_grid(cells, runner=fake_runner({}, []), progress=False)
    assert [r.status for r in results] == ["done", "done"]
    resumed, restarted = (r.cell for r in results)
    assert resumed.resume and not restarted.resume
    assert resumed.run_args() == ["-m", "densehmr.train", "method=dct", f"resume={tmp_path / 'a'}"]
    assert resumed.args() == cells[0].args()  # its identity: a later grid skips it
    record = json.loads((tmp_path / "a" / "cell.json").read_text())
    assert record["seconds_before"] == pytest.approx(30.0, abs=0.1) and record["seconds"] >= 30.0
    assert (record["git_commit"], record["resumed_at_commit"]) == ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert [r.commit for r in results] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert compose_train(resumed.run_args()[2:]).resume == str(tmp_path / "a")
    other = Cell("a", "dct", ("trainer.max_steps=60",), 0, tmp_path / "a")  # another command: no resumption
    (tmp_path / "a" / "metrics.json").unlink()  # unfinished again, with its checkpoint
    assert not run_grid([other], runner=fake_runner({}, []), progress=False)[0].cell.resume
    assert (tmp_path / "a.replaced-1" / "checkpoints" / "last.ckpt").is_file()


def test_grid_blocks_a_cell_without_its_checkpoint_and_fails_a_run_without_metrics(tmp_path):
    blocked = Cell("e", "meshpose", (), 0, tmp_path / "e", entry="densehmr.evaluate", requires=tmp_path / "x.ckpt")
    silent = Cell("s", "dct", (), 0, tmp_path / "s")
    results = run_grid([blocked, silent], runner=lambda cell, log: log.write_text("") or 0, progress=False)
    assert [r.status for r in results] == ["blocked", "failed"]
    assert blocked.log_path.name == "evaluate.out"


def test_a_cells_command_line_reads_back_in_hydra_whatever_its_folder(tmp_path):
    assert ablation.cell_name("pymaf", ["pymaf.feedback=mesh_aligned"]) == "pymaf-feedback-mesh_aligned"
    run_dir = tmp_path / "a b=c,d[1]"
    cell = Cell("x", "dct", ("dct.dense_weight=0.0",), 3, run_dir)
    cfg = compose_train(cell.args()[2:])
    assert (cfg.run_dir, cfg.seed, cfg.dct.dense_weight) == (str(run_dir), 3, 0.0)


def test_overrides_are_separated_from_options_wherever_they_stand():
    assert split_overrides(["--seeds", "0", "1", "trainer.max_steps=5", "+a.b=1", "--out=r"]) == (
        ["--seeds", "0", "1", "--out=r"], ["trainer.max_steps=5", "+a.b=1"])


# -- aggregation and tables -----------------------------------------------------------------------------------


def test_aggregate_mean_and_sample_std_over_seeds():
    out = aggregate([{"a": 0.1, "m": 10.0, "p": "lsp14"}, {"a": 0.3, "m": 14.0, "p": "lsp14", "only": 2.0}])
    assert out["a"] == pytest.approx(0.2) and out["a_std"] == pytest.approx(math.sqrt(0.02))
    assert out["m"] == pytest.approx(12.0) and out["m_std"] == pytest.approx(2 * math.sqrt(2))
    assert out["p"] == "lsp14" and out["only"] == 2.0 and "only_std" not in out and out["n_seeds"] == 2
    single = aggregate([{"a": 0.25}])
    assert single == {"a": 0.25, "n_seeds": 1}
    assert format_value(out, "a", "ap") == "20.0 ± 14.1" and format_value(single, "a", "ap") == "25.0"
    assert format_value(out, "missing", "mm") == "—" and format_value({"x": 12_630_000}, "x", "params") == "12.63"
    undefined = aggregate([{"m": 10.0}, {"m": float("nan")}])  # a seed whose metric could not be computed
    assert math.isnan(undefined["m"]) and "m_std" not in undefined and format_value(undefined, "m", "mm") == "nan"
    table = markdown_table([("r1", out), ("r2", single)], [("AP", "a", "ap"), ("none", "zz", "mm")], "row")
    assert table.splitlines() == ["| row | AP |", "|---|---|", "| r1 | 20.0 ± 14.1 |", "| r2 | 25.0 |"]


METRICS = {  # per method, per seed: hand-made numbers
    "meshpose": [{"densepose/gps_ap": 0.10, "vertexpose/densepose/gps_ap": 0.30, "mesh/pa_mpjpe": 80.0},
                 {"densepose/gps_ap": 0.30, "vertexpose/densepose/gps_ap": 0.50, "mesh/pa_mpjpe": 90.0}],
    "pymaf": [{"densepose/gps_ap": 0.05, "mesh/pa_mpjpe": 70.0, "mesh/mpjpe": 100.0},
              {"densepose/gps_ap": 0.07, "mesh/pa_mpjpe": 74.0, "mesh/mpjpe": 110.0}],
    "dct": [{"densepose/gps_ap": 0.02, "mesh/pa_mpjpe": 75.0}, {"densepose/gps_ap": 0.04, "mesh/pa_mpjpe": 85.0}],
    "densereg": [{"densepose/gps_ap": 0.40, "keypoints/ap": 0.0}, {"densepose/gps_ap": 0.60, "keypoints/ap": 0.0}],
}


def finished_compare(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """(runs, out): every method's two seeds finished with METRICS, networks measured as 12.5 M / 40 ms."""
    runs, out = tmp_path / "runs", tmp_path / "results"
    for method, seeds in METRICS.items():
        for seed, metrics in enumerate(seeds):
            write_metrics(runs / method / f"seed{seed}", metrics)
    monkeypatch.setattr(compare, "measure_network", lambda m, o: {"params": 12_500_000, "latency_ms": 40.0,
                                                                 "latency_threads": 1})
    return runs, out


def test_compare_writes_means_tables_and_figure_from_finished_runs(tmp_path, monkeypatch):
    runs, out = finished_compare(tmp_path, monkeypatch)
    code = compare.main(["--seeds", "0", "1", "--out", str(out), "--runs", str(runs), "--no-progress"])
    assert code == 0
    data = json.loads((out / "compare.json").read_text())
    mp = data["methods"]["meshpose"]
    assert mp["densepose/gps_ap"] == pytest.approx(0.2) and mp["densepose/gps_ap_std"] == pytest.approx(math.sqrt(0.02))
    assert mp["mesh/pa_mpjpe"] == pytest.approx(85.0) and mp["mesh/pa_mpjpe_std"] == pytest.approx(math.sqrt(50))
    assert mp["params"] == 12_500_000 and "mesh/pa_mpjpe" not in data["methods"]["densereg"]
    assert data["settings"]["seeds"] == [0, 1] and data["settings"]["backbone"] == "resnet18"
    assert "logger=csv" in data["settings"]["overrides"] and data["command"].startswith("python -m densehmr")
    # One wall-clock budget: each method's steps are its config's, recorded per method and not compared.
    cpu_steps = {m: int(compose_train([f"method={m}"]).method.cpu_steps) for m in METRICS}
    assert data["settings"]["max_steps"] == cpu_steps and "max_steps" not in data["settings"]["trainer"]
    md = (out / "compare.md").read_text()
    assert f"Training steps (batch size) per method: meshpose {cpu_steps['meshpose']} (16), pymaf" in md
    assert "| meshpose | 20.0 ± 14.1 | — | 40.0 ± 14.1 | — | — | — | — | 85.0 ± 7.1 | — | 12.50 | 40.0 |" in md
    assert "| densereg | 50.0 ± 14.1 | — | — | — | — | 0.0 ± 0.0 | — | — | — | 12.50 | 40.0 |" in md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"

    # --collect with a third seed: nothing trains, the tables hold the finished seeds, seed 2 is listed as not run.
    code = compare.main(["--seeds", "0", "1", "2", "--out", str(out), "--runs", str(runs), "--no-progress",
                         "--collect"])
    data = json.loads((out / "compare.json").read_text())
    assert code == 1 and data["methods"]["meshpose"]["densepose/gps_ap"] == pytest.approx(0.2)
    assert {c["status"] for c in data["cells"].values()} == {"skipped", "not run"}
    assert not (runs / "meshpose" / "seed2").exists() and ": not run" in (out / "compare.md").read_text()


def test_comparison_plot_puts_each_method_where_its_numbers_are_and_vertexpose_beside_meshpose():
    from densehmr.studies.plots import comparison_plot

    methods = {
        "meshpose": {"latency_ms": 17.0, "densepose/gps_ap": 0.03, "vertexpose/densepose/gps_ap": 0.21,
                     "vertexpose/densepose/gps_ap_std": 0.006, "mesh/pa_mpjpe": 113.0, "params": 22e6},
        "densereg": {"latency_ms": 14.0, "densepose/gps_ap": 0.26, "params": 12e6},  # no mesh: first panel only
    }
    from matplotlib.collections import PathCollection

    fig = comparison_plot(methods)
    speed, accuracy = fig.axes
    points = [sorted((round(float(x), 6), round(float(y), 6)) for c in ax.collections
                     if isinstance(c, PathCollection) for x, y in c.get_offsets()) for ax in (speed, accuracy)]
    assert points[0] == [(14.0, 26.0), (17.0, 3.0), (17.0, 21.0)]
    assert points[1] == [(113.0, 3.0), (113.0, 21.0)]
    assert {t.get_text() for t in speed.texts} == {"meshpose (22.0M)", "meshpose, VertexPose", "densereg (12.0M)"}
    fig.clf()


def test_compare_of_some_methods_keeps_the_others_rows_made_with_the_same_settings(tmp_path, monkeypatch):
    runs, out = finished_compare(tmp_path, monkeypatch)
    common = ["--seeds", "0", "1", "--out", str(out), "--runs", str(runs), "--no-progress"]
    assert compare.main(common) == 0
    first = json.loads((out / "compare.json").read_text())
    # Every finished cell's own metrics travel in the results file, not only their mean.
    seeds = [c["metrics"]["densepose/gps_ap"] for c in first["cells"].values() if c["name"] == "meshpose"]
    assert seeds == [METRICS["meshpose"][0]["densepose/gps_ap"], METRICS["meshpose"][1]["densepose/gps_ap"]]

    # DCT re-run after a change of its code: only its row and cells are new; the same Hydra overrides, given
    # twice, count as the same settings.
    write_metrics(runs / "dct" / "seed0", {"mesh/pa_mpjpe": 70.0})
    write_metrics(runs / "dct" / "seed1", {"mesh/pa_mpjpe": 80.0})
    assert compare.main([*common, "--methods", "dct", "logger=csv"]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert list(data["methods"]) == list(first["methods"])
    assert data["methods"]["dct"]["mesh/pa_mpjpe"] == pytest.approx(75.0)
    assert data["methods"]["meshpose"] == first["methods"]["meshpose"]
    assert data["cells"].keys() == first["cells"].keys() and list(data["kept"]) == ["meshpose", "pymaf", "densereg"]
    assert "Rows meshpose, pymaf, densereg: kept from `python -m densehmr" in (out / "compare.md").read_text()

    # Other settings (another step budget): nothing is kept, with a warning.
    assert compare.main([*common, "--methods", "dct", "trainer.max_steps=5", "--collect"]) == 0
    assert list(json.loads((out / "compare.json").read_text())["methods"]) == ["dct"]


def test_ablation_plan_shares_identical_cells_and_reevaluates_decodings(tmp_path):
    studies = {n: sweep.load_sweep(n) for n in ("meshpose_losses", "meshpose_uv_decoding", "vertexpose_vs_densereg")}
    cells, tables = ablation.plan(studies, None, ["logger=csv"], tmp_path)
    trained = sorted({c.name for c in cells if c.entry == "densehmr.train"})
    assert trained == ["densereg", "meshpose", "meshpose-ablation-l3d", "meshpose-ablation-l3d_l2d"]
    assert len(cells) == 4 * 2 + 3 * 2  # 2 seeds; the decodings are evaluations of the full model
    full = dict(tables["meshpose_losses"])[ablation.Row("ablation=full", "meshpose", ("ablation=full",))]
    vp = dict((r.label, c) for r, c in tables["vertexpose_vs_densereg"])["method=meshpose"]
    assert full == vp
    closest = dict((r.label, c) for r, c in tables["meshpose_uv_decoding"])["meshpose.uv_decoding=closest"][1]
    assert closest.entry == "densehmr.evaluate" and closest.requires == full[1].run_dir / "checkpoints" / "last.ckpt"
    assert "meshpose.uv_decoding=closest" in closest.overrides and "run_id=uv_decoding_closest" in closest.overrides
    assert [c.seed for c in cells] == [0] * 7 + [1] * 7  # seed-major


def test_ablation_tables_from_fake_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    studies = {"pymaf_aux_iuv": sweep.load_sweep("pymaf_aux_iuv")}
    _, tables = ablation.plan(studies, None, [*ablation.DEFAULT_OVERRIDES], runs)
    numbers = {"pymaf.aux_iuv=true": (100.0, 120.0), "pymaf.aux_iuv=false": (110.0, 111.0)}
    for row, by_seed in tables["pymaf_aux_iuv"]:
        for seed, cell in by_seed.items():
            write_metrics(cell.run_dir, {"mesh/mpjpe": numbers[row.label][seed], "densepose/gps_ap": 0.1 * seed})
    code = ablation.main(["--tables", "pymaf_aux_iuv", "--out", str(out), "--runs", str(runs), "--no-progress"])
    assert code == 0
    rows = json.loads((out / "ablation.json").read_text())["studies"]["pymaf_aux_iuv"]["rows"]
    assert rows["pymaf.aux_iuv=true"]["mesh/mpjpe"] == pytest.approx(110.0)
    assert rows["pymaf.aux_iuv=true"]["mesh/mpjpe_std"] == pytest.approx(math.sqrt(200))
    assert rows["pymaf.aux_iuv=false"]["seeds"] == [0, 1]
    md = (out / "ablation.md").read_text()
    assert "## PyMAF Table 5" in md
    assert "| pymaf.aux_iuv=true | 5.0 ± 7.1 | 110.0 ± 14.1 |" in md
    assert "| pymaf.aux_iuv=false | 5.0 ± 7.1 | 110.5 ± 0.7 |" in md
    # Each method's own steps, as compare records them: not the steps of one composition for every table.
    data = json.loads((out / "ablation.json").read_text())
    cpu_steps = {m: int(compose_train([f"method={m}"]).method.cpu_steps) for m in METRICS}
    assert data["settings"]["max_steps"] == cpu_steps and "max_steps" not in data["settings"]["trainer"]
    assert f"Training steps (batch size) per method: pymaf {cpu_steps['pymaf']} (16)." in md
    assert f"steps meshpose {cpu_steps['meshpose']}, pymaf {cpu_steps['pymaf']}" in report.report({"ablation": data})


def test_results_are_kept_only_where_each_methods_own_steps_agree():
    from densehmr.studies.keep import same_settings

    base = {"trainer": {"precision": "bf16-mixed"}, "overrides": ["logger=csv"],
            "max_steps": {"meshpose": 1000, "dct": 2000}, "batch_size": {"meshpose": 16, "dct": 16}}
    assert same_settings(base, {**base, "overrides": ["logger=csv", "logger=csv"]})
    assert not same_settings(base, {**base, "max_steps": {"meshpose": 1000, "dct": 1500}})
    assert not same_settings(base, {**base, "batch_size": {"meshpose": 32, "dct": 16}})
    # A method one file does not record is not compared: a file of MeshPose alone keeps DCT's rows.
    assert same_settings(base, {**base, "max_steps": {"meshpose": 1000}, "batch_size": {"meshpose": 16}})


def test_ablation_of_some_tables_keeps_the_others_and_the_report_names_their_command(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    studies = {name: sweep.load_sweep(name) for name in ("pymaf_aux_iuv", "dct_dense")}
    _, tables = ablation.plan(studies, None, [*ablation.DEFAULT_OVERRIDES], runs)
    for rows in tables.values():
        for _, by_seed in rows:
            for seed, cell in by_seed.items():
                write_metrics(cell.run_dir, {"mesh/pa_mpjpe": 100.0 + seed, "mesh/mpjpe": 150.0 + seed})
    common = ["--out", str(out), "--runs", str(runs), "--no-progress"]
    assert ablation.main(["--tables", "pymaf_aux_iuv,dct_dense", *common]) == 0
    first = json.loads((out / "ablation.json").read_text())
    first_cmd = first["command"]

    # A later session, the run folders gone: DCT's table re-made from new runs, PyMAF's kept from the file.
    for rows in tables.values():
        for _, by_seed in rows:
            for cell in by_seed.values():
                (cell.run_dir / "metrics.json").unlink()
    for _, by_seed in tables["dct_dense"]:
        for seed, cell in by_seed.items():
            write_metrics(cell.run_dir, {"mesh/pa_mpjpe": 90.0 + seed})
    assert ablation.main(["--tables", "dct_dense", *common]) == 0
    data = json.loads((out / "ablation.json").read_text())
    assert list(data["studies"]) == ["pymaf_aux_iuv", "dct_dense"] and list(data["kept"]) == ["pymaf_aux_iuv"]
    assert data["studies"]["pymaf_aux_iuv"] == first["studies"]["pymaf_aux_iuv"]
    assert data["studies"]["dct_dense"]["rows"]["dct.dense_weight=0.0"]["mesh/pa_mpjpe"] == pytest.approx(90.5)
    assert data["cells"].keys() == first["cells"].keys()
    assert f"Tables pymaf_aux_iuv: kept from `{first_cmd}`" in (out / "ablation.md").read_text()
    text = report.report({"compare": {}, "ablation": data})
    pymaf = text[text.index("PyMAF's auxiliary IUV"):text.index("DCT's dense")]
    assert f"Made by: `{first_cmd}`" in pymaf and data["command"] not in pymaf


# -- report --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    ((0.50, 0.01, 0.40, 0.01, "higher"), "agree"),
    ((0.40, 0.01, 0.50, 0.01, "higher"), "disagree"),
    ((0.50, 0.10, 0.45, 0.10, "higher"), "inconclusive"),  # gap 0.05 < spread 0.14
    ((0.50, None, 0.10, 0.01, "higher"), "inconclusive"),  # one seed: no spread
    ((60.0, 1.0, 70.0, 1.0, "lower"), "agree"),
    ((100.0, 5.0, 95.0, 5.0, "lower", 0.10), "agree"),  # comparable: within 10 %
    ((120.0, 1.0, 95.0, 1.0, "lower", 0.10), "disagree"),
    ((0.50, 0.05, 0.52, 0.05, "higher", 0.0), "inconclusive"),  # "at least as good", within noise
    ((0.50, 0.05, 0.70, 0.05, "higher", 0.0), "disagree"),
])
def test_verdicts(args, expected):
    assert report.verdict(*args)[0] == expected


def test_report_judges_claims_from_the_numbers():
    def row(**metrics):
        return {k: v for k, (m, s) in metrics.items() for k, v in ((k, m), (f"{k}_std", s))}

    gps = "densepose/gps_ap"
    ablation_data = {"command": "python -m densehmr.studies.ablation", "settings": {"git_commit": "abc"}, "studies": {
        "meshpose_losses": {"rows": {"ablation=l3d": row(**{gps: (0.10, 0.01)}),
                                     "ablation=l3d_l2d": row(**{gps: (0.20, 0.01)}),
                                     "ablation=full": row(**{gps: (0.30, 0.01)})}},
        "dct_dense": {"rows": {"dct.dense_weight=1.0": row(**{gps: (0.10, 0.01), "mesh/pa_mpjpe": (90.0, 1.0)}),
                               "dct.dense_weight=0.0": row(**{gps: (0.20, 0.01), "mesh/pa_mpjpe": (80.0, 1.0)})}},
        "pymaf_aux_iuv": {"rows": {"pymaf.aux_iuv=true": row(**{"mesh/mpjpe": (100.0, 10.0),
                                                                  "mesh/pa_mpjpe": (70.0, 10.0)}),
                                   "pymaf.aux_iuv=false": row(**{"mesh/mpjpe": (101.0, 10.0),
                                                                   "mesh/pa_mpjpe": (71.0, 10.0)})}},
    }}
    results = {"compare": {}, "ablation": ablation_data}
    by_name = {c.name: c for c in report.CLAIMS}

    def claim_verdict(name):
        return report.combine([report.judge(c, results)["verdict"] for c in by_name[name].checks])

    assert claim_verdict("meshpose_losses") == "agree"
    assert claim_verdict("dct_dense") == "disagree"
    assert claim_verdict("pymaf_aux_iuv") == "inconclusive"
    assert claim_verdict("pymaf_feedback") == "no data"
    # Equal APs satisfy "at least as good", but both near zero they say nothing: inconclusive.
    decoding = {f"meshpose.uv_decoding={d}": row(**{"vertexpose/densepose/gps_ap": (0.001, 0.0)})
                for d in ("barycentric", "closest", "global_average")}
    ablation_data["studies"]["meshpose_uv_decoding"] = {"rows": decoding}
    assert claim_verdict("uv_decoding") == "inconclusive"
    decoding["meshpose.uv_decoding=closest"] = row(**{"vertexpose/densepose/gps_ap": (0.30, 0.0)})
    decoding["meshpose.uv_decoding=barycentric"] = row(**{"vertexpose/densepose/gps_ap": (0.30, 0.0)})
    decoding["meshpose.uv_decoding=global_average"] = row(**{"vertexpose/densepose/gps_ap": (0.20, 0.0)})
    assert claim_verdict("uv_decoding") == "agree"
    text = report.report(results)
    assert "**Verdict: agree**" in text and "**Verdict: disagree**" in text and "results/compare.json (missing)" in text
    line = "| densepose/gps_ap: ablation=l3d_l2d > ablation=l3d | 20.0 ± 1.0 | 10.0 ± 1.0 | +10.0 | 1.4 | agree |"
    assert line in text
    assert "`python -m densehmr.studies.ablation`" in text


# -- sweeps --------------------------------------------------------------------------------------------------


def test_every_sweep_file_is_an_ablation_study_in_wandb_grid_form():
    assert set(SWEEPS) == set(ablation.STUDIES)
    for name in SWEEPS:
        s = sweep.load_sweep(name)
        assert s["method"] == "grid" and s["command"][-1] == "${args_no_hyphens}"
        assert s["command"][:4] == ["${env}", "${interpreter}", "-m", "densehmr.train"]
        assert "method" in s["parameters"] and len(sweep.parameter_values(s)["seed"]) >= 2


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_point_composes_as_the_agent_passes_it(name):
    s = sweep.load_sweep(name)
    groups = {p.name for p in (ROOT / "configs").iterdir() if p.is_dir()}
    for point in sweep.expand_grid(s):
        # W&B's ${args_no_hyphens} writes f"{key}={value}" (Python's True, 1.0); Hydra must read those too.
        cfg = compose_train([f"{k}={v}" for k, v in point.items()] + ["logger=none"])
        for key, value in point.items():
            if key == "method":
                assert cfg.method.name == value
            elif key not in groups:
                assert OmegaConf.select(cfg, key) == value, (key, value)


@pytest.mark.parametrize("name", SWEEPS)
def test_multirun_command_expands_to_the_sweep_grid(name):
    s = sweep.load_sweep(name)
    args = shlex.split(sweep.multirun_command(s))
    assert args[:4] == ["python", "-m", "densehmr.train", "-m"]
    parsed = OverridesParser.create().parse_overrides(args[4:])
    axes = [[(o.key_or_group, v) for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])]
            for o in parsed]
    multirun = {tuple(sorted(combo)) for combo in itertools.product(*axes)}
    assert multirun == {tuple(sorted(p.items())) for p in sweep.expand_grid(s)}


def test_dct_sweep_uses_the_configured_dense_weight_and_zero():
    default = compose_train(["method=dct"]).dct.dense_weight
    assert sorted(sweep.parameter_values(sweep.load_sweep("dct_dense"))["dct.dense_weight"]) == sorted([default, 0.0])


def test_sweep_without_credentials_prints_one_line_and_fails(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "sweep", lambda *a, **k: pytest.fail("must not reach W&B"))
    assert sweep.main(["pymaf_feedback", "trainer.max_steps=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wandb login" in err[0] and "make ablation" in err[0]
    assert "python -m densehmr.train -m method=pymaf pymaf.feedback=global,grid,mesh_aligned seed=0,1" in err[0]

    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password x\n")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert sweep.main(["pymaf_feedback"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- one real multirun -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return tiny_synthetic


def test_a_sweep_runs_as_a_hydra_multirun(tiny_data, tmp_path):
    s = sweep.load_sweep("dct_dense")
    s["parameters"]["seed"] = {"value": 0}  # a 2-point grid: dense_weight 1.0 and 0.0
    extra = [f"data.train.0.root={tiny_data / 'train'}", f"data.val.0.root={tiny_data / 'val'}",
             "data.num_workers=0", "method.batch_size=2", "image_size=[64,64]", "logger=none",
             "+trainer.fast_dev_run=1", "test_after_fit=false", f"hydra.sweep.dir={tmp_path / 'multirun'}",
             f"run_dir={tmp_path}/job${{hydra:job.num}}"]
    args = shlex.split(sweep.multirun_command(s, extra))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    weights = [OmegaConf.load(tmp_path / f"job{i}" / "config.yaml").dct.dense_weight for i in (0, 1)]
    assert weights == [1.0, 0.0]
    assert all((tmp_path / f"job{i}" / "metrics.json").is_file() for i in (0, 1))


def test_wall_time_says_when_some_cells_have_no_recorded_time():
    assert wall_time({"seconds": 2340}) == ", cells 39 min"
    assert wall_time({"seconds": 240, "untimed_cells": 24}) == ", cells ≥ 4 min (24 untimed)"
    assert wall_time({}) == ""


def test_timing_sums_cells_and_counts_finished_ones_without_a_time(tmp_path):
    cells = [Cell(n, "dct", (), 0, tmp_path / n) for n in "abcd"]
    results = [CellResult(cells[0], "done", 0, 60.4), CellResult(cells[1], "skipped", 0, 0.0),
               CellResult(cells[2], "failed", 1, 0.0), CellResult(cells[3], "skipped", 0, 30.0)]
    assert timing(statuses(results)) == {"seconds": 90, "untimed_cells": 1}
