"""`python -m densehmr.studies.ablation [--seeds 0 1] [--out results] [--runs runs/studies/ablation]
[--tables t1,t2] [overrides...]` (`make ablation ARGS="<overrides>"`)

The ablation tables of the seed papers, one per configs/sweeps/<study>.yaml (the same grids `make sweep`
runs on W&B): every row is trained for each seed, then results/ablation.json and results/ablation.md give
mean ± std over seeds. A grid's `evaluation_only` parameters (a decoding, say) are not trained: one model
per seed is trained without them and its checkpoint evaluated once per value (`python -m densehmr.evaluate`),
so those rows differ by the option alone. A cell reached from two studies (e.g. the full MeshPose model) is
trained once. Re-running skips finished cells, evaluations included; `--collect` runs none and writes the
tables from the cells finished so far. `--tables a,b` runs those and keeps the other tables of the ablation.json
already in `--out` when it was made with the same settings (`densehmr.studies.keep`).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from densehmr.methods.registry import method_names
from densehmr.studies.common import (
    canonical_overrides,
    compose_train,
    config_error,
    git_commit,
    invocation,
    method_budgets,
    parse_study_args,
    run_settings,
    write_json,
    write_text,
)
from densehmr.studies.grid import EVALUATE, Cell, CellResult, hydra_string, read_metrics, run_grid, statuses, timing
from densehmr.studies.keep import keep_parts, kept_lines, read_previous
from densehmr.studies.sweep import SWEEPS_DIR, evaluation_only, expand_grid, load_sweep, override, parameter_values
from densehmr.studies.tables import (
    METRIC_COLUMNS,
    aggregate,
    budget_lines,
    commit_lines,
    markdown_table,
    unfinished_lines,
    wall_time,
)

STUDIES = ("meshpose_losses", "meshpose_uv_decoding", "vertexpose_vs_densereg", "pymaf_feedback", "pymaf_aux_iuv",
           "dct_dense", "densereg_regression", "densereg_decode")
# Every cell trains at the CPU default, as `make compare` does (each method's cpu_steps under the wall-clock
# guard): at a ninth of it (100 steps) every MeshPose DensePose AP was still 0.0 and the tables could not
# separate the settings. ARGS overrides it (`trainer.max_steps=N`).
DEFAULT_OVERRIDES = ("logger=csv",)


@dataclass(frozen=True)
class Row:
    """One row of a study's table: the method, its training overrides and its evaluation-only overrides
    (none: the row's numbers are its training's test)."""

    label: str
    method: str
    train: tuple[str, ...]
    evaluate: tuple[str, ...] = ()


def study_rows(sweep: Mapping) -> list[Row]:
    """The sweep's grid without seeds, one Row per point; the label names the values that vary."""
    values = parameter_values(sweep)
    varying = [k for k, v in values.items() if len(v) > 1 and k != "seed"]
    at_evaluation = evaluation_only(sweep)
    rows = []
    for point in expand_grid(sweep, exclude=("seed",)):
        method = point.pop("method")
        label = ", ".join(override(k, method if k == "method" else point[k]) for k in varying) or method
        rows.append(Row(label, method, tuple(override(k, v) for k, v in point.items() if k not in at_evaluation),
                        tuple(override(k, v) for k, v in point.items() if k in at_evaluation)))
    return rows


def study_seeds(sweep: Mapping, seeds: Sequence[int] | None) -> list[int]:
    return list(seeds) if seeds else [int(s) for s in parameter_values(sweep).get("seed", [0])]


def cell_name(method: str, overrides: Sequence[str]) -> str:
    """A folder name for a cell: `pymaf` + `pymaf.feedback=grid` -> `pymaf-feedback-grid`. Only letters,
    digits and `._-`: a run folder is passed back to Hydra as `run_dir=...`, whose grammar refuses `=`."""
    parts = [method]
    for o in overrides:
        key, _, value = o.partition("=")
        parts.append(f"{key.removeprefix(method + '.')}-{value}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


def eval_run_id(overrides: Sequence[str]) -> str:
    """`meshpose.uv_decoding=closest` -> `uv_decoding_closest` (a folder name Hydra's grammar accepts)."""
    return "_".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + "_" + o.split("=", 1)[1] for o in overrides)


def trained_run(cell: Cell) -> Path:
    """The run folder of the model behind a cell's numbers: its own for a training, the checkpoint's run for
    an evaluation."""
    return cell.requires.parent.parent if cell.entry == EVALUATE and cell.requires else cell.run_dir


def plan(studies: Mapping[str, Mapping], seeds: Sequence[int] | None, shared: Sequence[str], runs: Path,
         canonical=canonical_overrides) -> tuple[list[Cell], dict[str, list[tuple[Row, dict[int, Cell]]]]]:
    """The cells to run (deduplicated, seed-major so that a stopped grid has every row's first seed) and,
    per study, each row with the cell giving its numbers for each seed."""
    cells: dict[tuple, Cell] = {}
    tables: dict[str, list[tuple[Row, dict[int, Cell]]]] = {}
    for study, sweep in studies.items():
        tables[study] = []
        for row in study_rows(sweep):
            canon = tuple(canonical(row.method, row.train, shared))
            name = cell_name(row.method, canon)
            by_seed = {}
            for seed in study_seeds(sweep, seeds):
                train = cells.setdefault((name, seed, ()), Cell(name, row.method, (*shared, *canon), seed,
                                                                Path(runs) / name / f"seed{seed}"))
                by_seed[seed] = train
                if row.evaluate:
                    run_id = eval_run_id(row.evaluate)
                    ckpt = train.run_dir / "checkpoints" / "last.ckpt"
                    by_seed[seed] = cells.setdefault((name, seed, row.evaluate), Cell(
                        f"{name}+{run_id}", row.method,
                        (*train.overrides, *row.evaluate, f"ckpt_path={hydra_string(ckpt)}", f"run_id={run_id}"), seed,
                        train.run_dir / f"eval-{run_id}", entry=EVALUATE, requires=ckpt))
            tables[study].append((row, by_seed))
    order = sorted({c.seed for c in cells.values()})
    ranked = sorted(enumerate(cells.values()), key=lambda ic: (order.index(ic[1].seed), ic[0]))
    return [c for _, c in ranked], tables


def study_results(tables: Mapping[str, list[tuple[Row, dict[int, Cell]]]], results: Sequence[CellResult],
                  studies: Mapping[str, Mapping]) -> dict:
    """study -> title, parameters and rows: label -> mean ± std over the seeds whose cell finished."""
    finished = {r.cell for r in results if r.ok}
    out = {}
    for study, rows in tables.items():
        entries = {}
        for row, by_seed in rows:
            done = [c for c in by_seed.values() if c in finished]
            metrics = [m for c in done if (m := read_metrics(c.metrics_path)) is not None]
            entries[row.label] = {
                **aggregate(metrics), "method": row.method, "overrides": [*row.train, *row.evaluate],
                "evaluation_only": list(row.evaluate), "seeds": [c.seed for c in done],
                "runs": [str(c.run_dir) for c in by_seed.values()],
                "trained_runs": [str(trained_run(c)) for c in by_seed.values()],
                "commands": [c.command() for c in by_seed.values()],
            }
        values = parameter_values(studies[study])
        out[study] = {"title": studies[study].get("description", study), "sweep": f"configs/sweeps/{study}.yaml",
                      "parameters": [k for k, v in values.items() if len(v) > 1 and k != "seed"], "rows": entries}
    return out


NOTES = {
    "vertexpose_vs_densereg": "Compare MeshPose's VertexPose GPS AP with DenseReg's GPS AP (same backbone).",
}
EVALUATED = " †"


def evaluation_note(rows: Mapping[str, Mapping]) -> str:
    """The line saying which rows (marked †) are evaluations of the same trained models, or nothing."""
    evaluated = [r for r in rows.values() if r.get("evaluation_only")]
    if not evaluated:
        return ""
    options = dict.fromkeys(o.split("=", 1)[0] for r in evaluated for o in r["evaluation_only"])
    models = dict.fromkeys(run for r in evaluated for run in r["trained_runs"])
    return (f"{EVALUATED.strip()} Not trained per row: evaluations of the trained models ("
            + ", ".join(f"`{m}`" for m in models) + ", one per seed) with "
            + ", ".join(f"`{o}`" for o in options) + " set at evaluation (`python -m densehmr.evaluate`): "
            "rows evaluating the same models differ by that option alone, not by training.")


def keep_previous(data: dict, previous: Mapping | None, made: Sequence[str]) -> list[str]:
    """Add to `data` the tables of an earlier ablation.json that this run did not make, with their cells, when
    made with the same settings; the tables in STUDIES order."""
    if previous is None:
        return []
    others = [t for t in STUDIES if t in previous["studies"] and t not in made]
    cells = {t: [run for row in previous["studies"][t]["rows"].values()
                 for run in (*row.get("trained_runs", ()), *row.get("runs", ()))] for t in others}
    kept = keep_parts(data, previous, "studies", others, cells)
    data["studies"] = {t: data["studies"][t] for t in STUDIES if t in data["studies"]}
    return kept


def markdown(data: Mapping) -> str:
    s = data["settings"]
    written = f"Written by `{data['command']}` on {data['written']} (commit `{s['git_commit'][:9]}`{wall_time(s)})."
    lines = ["# Ablations", "", written, "", *commit_lines(data), *kept_lines(data, "tables"),
             f"Shared overrides: `{' '.join(s['overrides'])}`; backbone {s['backbone']}, crops "
             f"{s['image_size'][0]}×{s['image_size'][1]}. Mean ± standard deviation over the seeds listed (± only "
             "with more than one seed); AP ×100, errors in mm, — where the method has no such output.", "",
             *budget_lines(s, dict.fromkeys(row["method"] for entry in data["studies"].values()
                                            for row in entry["rows"].values()))]
    for study, entry in data["studies"].items():
        seeds = sorted({seed for row in entry["rows"].values() for seed in row["seeds"]})
        rows = [(label + (EVALUATED if row.get("evaluation_only") else ""), row)
                for label, row in entry["rows"].items()]
        note = evaluation_note(entry["rows"])
        lines += [f"## {entry['title']}", "", f"Grid: `{entry['sweep']}`; finished seeds: "
                  f"{', '.join(map(str, seeds)) or 'none'}. {NOTES.get(study, '')}".rstrip(), "",
                  markdown_table(rows, METRIC_COLUMNS, "row"), *([note, ""] if note else [])]
    lines += unfinished_lines(data["cells"], "## Cells that did not finish")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_study_args(
        "densehmr.studies.ablation", __doc__, "runs/studies/ablation", "default: each sweep file's seeds", argv,
        lambda p: p.add_argument("--tables", default=",".join(STUDIES), help=f"comma-separated: {', '.join(STUDIES)}"),
    )
    names = [t for t in args.tables.split(",") if t]
    unknown = [t for t in names if not (SWEEPS_DIR / f"{t}.yaml").is_file()]
    if unknown:
        print(f"error: unknown tables {unknown}; choose from {', '.join(STUDIES)}", file=sys.stderr)
        return 2

    shared = [*DEFAULT_OVERRIDES, *args.overrides]
    try:
        studies = {name: load_sweep(name) for name in names}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        cells, tables = plan(studies, args.seeds, shared, args.runs)
    except (HydraException, OmegaConfBaseException) as err:
        return config_error(err)
    commit = git_commit()  # the code the cells run, not the code at the end
    results = run_grid(cells, progress=not args.no_progress, desc="ablation", run=not args.collect)
    records = statuses(results)
    data = {
        "command": invocation("densehmr.studies.ablation", argv),
        "written": dt.datetime.now().isoformat(timespec="seconds"),
        "settings": {**run_settings(compose_train(["method=meshpose", *shared])), "overrides": shared,
                     "git_commit": commit,
                     **method_budgets({m: compose_train([f"method={m}", *shared]) for m in method_names()})},
        "studies": study_results(tables, results, studies),
        "cells": records,
    }
    keep_previous(data, read_previous(args.out / "ablation.json", "studies"), names)
    data["settings"].update(timing(data["cells"]))
    write_json(args.out / "ablation.json", data)
    write_text(args.out / "ablation.md", markdown(data))
    print(f"wrote {args.out / 'ablation.json'} and {args.out / 'ablation.md'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
