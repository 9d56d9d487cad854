"""`python -m densehmr.studies.compare [--seeds 0] [--out results] [--runs runs/studies/compare] [overrides...]`

Trains and evaluates every method with the same shared settings (data, crop size, backbone, trainer, seeds:
configs/train.yaml's defaults plus the overrides given, applied to all; at the CPU default each method's step
count is its own, the steps its speed fits in one wall-clock budget, unless `trainer.max_steps=N` sets one for
all), then writes results/compare.json,
results/compare.md and results/compare.png (`make compare ARGS="<overrides>"`). Re-running skips the runs
already finished; `--dry-run` lists the cells (every configured method, densehmr.methods.registry) and
stops; `--collect` runs none and writes the tables from the cells finished so far. `--methods a b` trains only
those and keeps the other methods' rows of the compare.json already in `--out` when it was made with the same
settings, so one method can be re-run after a change without training the others again.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from densehmr.methods.registry import method_names
from densehmr.studies.common import (
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
from densehmr.studies.grid import Cell, is_finished, run_grid, statuses, timing
from densehmr.studies.keep import SETTINGS, keep_parts, kept_lines, read_previous
from densehmr.studies.tables import (
    METRIC_COLUMNS,
    aggregate,
    budget_lines,
    commit_lines,
    markdown_table,
    unfinished_lines,
    wall_time,
)

# Grid runs log to CSV: an offline W&B run per cell costs startup time and disk (`logger=wandb` to change).
DEFAULT_OVERRIDES = ("logger=csv",)
COLUMNS = (
    *(c for c in METRIC_COLUMNS if c[1] != "vertexpose/densepose/gpsm_ap"),
    ("params (M)", "params", "params"),
    ("CPU latency B1 (ms)", "latency_ms", "ms"),
)


def compare_cells(methods: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], runs: Path) -> list[Cell]:
    """One training per (method, seed), seed-major: a stopped grid still has every method's first seed."""
    return [Cell(m, m, tuple(overrides), s, Path(runs) / m / f"seed{s}") for s in seeds for m in methods]


def listing(cells: Sequence[Cell]) -> list[str]:
    """One line per cell: whether it is finished (its run is reused) or to run, and its command."""
    return [f"{'finished' if is_finished(c) else 'to run':8}  {c.command()}" for c in cells]


def measure_network(method: str, overrides: Sequence[str], repeats: int = 20, warmup: int = 3) -> dict:
    """Parameters and median CPU latency (ms) of one image through the network as trained (the same
    overrides), with densehmr.bench's counters."""
    import torch

    from densehmr.bench.methods import count_params, median_ms
    from densehmr.runs import build_method

    cfg = compose_train([f"method={method}", *overrides, "logger=none"])
    model = build_method(cfg).eval()
    h, w = (int(s) for s in cfg.image_size)
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latency = median_ms(lambda: model(image), repeats, warmup, "cpu")
    return {"params": count_params(model), "latency_ms": latency, "latency_threads": torch.get_num_threads()}


def method_results(cells: Mapping[str, Mapping], measures: Mapping[str, Mapping]) -> dict:
    """method -> mean (± std) of the metrics of its finished cells (`statuses` records, in seed order), plus
    params and latency_ms."""
    metrics: dict[str, list[dict]] = {}
    for cell in cells.values():
        metrics.setdefault(cell["name"], [])
        if "metrics" in cell:
            metrics[cell["name"]].append(cell["metrics"])
    return {m: {**aggregate(runs), **measures.get(m, {})} for m, runs in metrics.items()}


def keep_previous(data: dict, previous: Mapping | None, trained: Sequence[str]) -> list[str]:
    """Add to `data` the rows of the methods in an earlier compare.json that this run did not train, made with the
    same settings, steps and seeds (`densehmr.studies.keep`); the rows in registry order."""
    if previous is None:
        return []
    others = [m for m in method_names() if m in previous["methods"] and m not in trained]
    cells = {m: [k for k, c in previous["cells"].items() if c["name"] == m] for m in others}
    kept = keep_parts(data, previous, "methods", others, cells, (*SETTINGS, "seeds"))
    order = {m: i for i, m in enumerate(method_names())}
    data["methods"] = dict(sorted(data["methods"].items(), key=lambda kv: order.get(kv[0], len(order))))
    return kept


def markdown(data: Mapping) -> str:
    s = data["settings"]
    trainer = ", ".join(f"{k}={v}" for k, v in s["trainer"].items() if k in ("max_steps", "max_time", "max_epochs"))
    lines = [
        "# Method comparison",
        "",
        f"Written by `{data['command']}` on {data['written']} (commit `{s['git_commit'][:9]}`{wall_time(s)}).",
        "",
        *commit_lines(data),
        f"Shared settings: backbone {s['backbone']}, crops {s['image_size'][0]}×{s['image_size'][1]}, trainer "
        f"{trainer}, seeds {', '.join(map(str, s['seeds']))}, train data {', '.join(s['data_train'])}, evaluated "
        f"on {', '.join(s['data_val'])}; overrides: `{' '.join(s['overrides']) or 'none'}`.",
        "",
        *budget_lines(s, data["methods"]),
        "Mean ± standard deviation over seeds (± only with more than one seed). AP ×100; MPJPE, PA-MPJPE and PVE "
        "in mm; — where a method has no such output. Latency: median of batch-1 forwards on CPU "
        f"({s.get('latency_threads', '?')} torch threads), measured after training, on a shared machine.",
        "",
        markdown_table(list(data["methods"].items()), COLUMNS, "method", drop_empty=False),
        *kept_lines(data, "rows"),
        "![accuracy against latency and PA-MPJPE](compare.png)",
        "",
    ]
    lines += unfinished_lines(data["cells"], "Cells that did not finish (their numbers are missing above):")
    return "\n".join(lines)


def _options(parser) -> None:
    parser.add_argument("--methods", nargs="+", default=method_names(), help="default: every configured method")
    parser.add_argument("--dry-run", action="store_true", help="list the cells (finished or to run) and stop")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_study_args(
        "densehmr.studies.compare", __doc__, "runs/studies/compare", "default: configs/train.yaml's seed", argv,
        _options,
    )
    shared = [*DEFAULT_OVERRIDES, *args.overrides]
    try:
        configs = {m: compose_train([f"method={m}", *shared]) for m in args.methods}
    except (HydraException, OmegaConfBaseException) as err:
        return config_error(err)
    seeds = args.seeds if args.seeds is not None else [int(next(iter(configs.values())).seed)]
    settings = {m: run_settings(cfg) for m, cfg in configs.items()}
    if len({str(v) for v in settings.values()}) > 1:
        print(f"warning: the methods' settings differ: {settings}", file=sys.stderr)

    cells = compare_cells(args.methods, seeds, shared, args.runs)
    if args.dry_run:
        print("\n".join(listing(cells)))
        return 0
    commit = git_commit()  # the code the cells run, not the code at the end
    results = run_grid(cells, progress=not args.no_progress, desc="compare", run=not args.collect)
    measures = {m: measure_network(m, shared) for m in args.methods}
    first = next(iter(configs.values()))
    cell_records = statuses(results)
    data = {
        "command": invocation("densehmr.studies.compare", argv),
        "written": dt.datetime.now().isoformat(timespec="seconds"),
        "settings": {
            **settings[args.methods[0]], "overrides": shared, "seeds": seeds, "git_commit": commit,
            # every method's, so that rows kept from an earlier file are checked against them too
            **method_budgets({m: configs.get(m) or compose_train([f"method={m}", *shared]) for m in method_names()}),
            "latency_threads": next(iter(measures.values()))["latency_threads"],
        },
        "methods": method_results(cell_records, measures),
        "cells": cell_records,
    }
    for method in keep_previous(data, read_previous(args.out / "compare.json", "methods"), args.methods):
        # Latency belongs to the network and this machine, not to the training: measured anew with the others.
        data["methods"][method].update(measure_network(method, shared))
    data["settings"].update(timing(data["cells"]))
    out = args.out
    write_json(out / "compare.json", data)
    write_text(out / "compare.md", markdown(data))
    from densehmr.studies.plots import compare_figure, log_to_wandb, write_figure

    png = write_figure(out / "compare.png", compare_figure(data["methods"]))
    log_to_wandb(png, dict(first.logger), key="compare")
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'} and {png}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
