"""Seeds to numbers, numbers to markdown: the mean and spread of each metric over seeds, and tables.

An entry is a flat dict: metric key -> mean over seeds, `<key>_std` -> sample standard deviation (n - 1)
where more than one seed has the metric, `n_seeds`. Average precisions are stored as fractions and shown
x100; errors are in mm.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from densehmr.run_record import STOPPED_BY, TRUNCATED

# (header, metric key, kind): kind says how to show the number (see `format_value`).
Column = tuple[str, str, str]

METRIC_COLUMNS: tuple[Column, ...] = (
    ("GPS AP", "densepose/gps_ap", "ap"),
    ("GPSm AP", "densepose/gpsm_ap", "ap"),
    ("VertexPose GPS AP", "vertexpose/densepose/gps_ap", "ap"),
    ("VertexPose GPSm AP", "vertexpose/densepose/gpsm_ap", "ap"),
    ("IoU AP", "densepose/iou_ap", "ap"),
    ("mask IoU", "mask/iou", "ap"),
    ("keypoint AP", "keypoints/ap", "ap"),
    ("MPJPE (mm)", "mesh/mpjpe", "mm"),
    ("PA-MPJPE (mm)", "mesh/pa_mpjpe", "mm"),
    ("PVE (mm)", "mesh/pve", "mm"),
)
MISSING = "—"
TRUNCATED_MARK = "†"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate(runs: Sequence[Mapping]) -> dict:
    """Mean of every numeric metric over `runs` (one metrics dict per seed), `<key>_std` where >1 seed has
    it, text metrics (e.g. `mesh/protocol`) kept when all seeds agree, `n_seeds`, and `truncated_seeds`
    (how many seeds the wall-clock guard stopped before their step budget) where the runs record it."""
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out: dict = {}
    for key in keys:
        values = [run[key] for run in runs if key in run and run[key] is not None]
        if values and all(_number(v) for v in values):
            numbers = [float(v) for v in values]
            out[key] = statistics.fmean(numbers)  # nan if a seed's value is: shown, never hidden
            if len(numbers) > 1 and all(math.isfinite(n) for n in numbers):
                out[f"{key}_std"] = statistics.stdev(numbers)
        elif values and all(v == values[0] for v in values):
            out[key] = values[0]
    if any(STOPPED_BY in run for run in runs):
        out["truncated_seeds"] = sum(run.get(STOPPED_BY) == TRUNCATED for run in runs)
    out["n_seeds"] = len(runs)
    return out


def format_value(entry: Mapping, key: str, kind: str) -> str:
    """One table cell: `mean ± std` (std only where measured), or — where the metric is missing.

    kind: ap (fraction shown x100), mm, params (shown in millions), ms.
    """
    value = entry.get(key)
    if not _number(value):
        return MISSING
    if not math.isfinite(value):
        return "nan"
    scale, digits = {"ap": (100.0, 1), "mm": (1.0, 1), "params": (1e-6, 2), "ms": (1.0, 1)}[kind]
    text = f"{value * scale:.{digits}f}"
    std = entry.get(f"{key}_std")
    if _number(std) and math.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def markdown_table(rows: Sequence[tuple[str, Mapping]], columns: Sequence[Column], first: str = "",
                   drop_empty: bool = True) -> str:
    """A markdown table: one row per (label, entry); columns missing from every row are left out. Rows with
    seeds the wall-clock guard cut short are marked †, with a note under the table."""
    if drop_empty:
        columns = [c for c in columns if any(_number(entry.get(c[1])) for _, entry in rows)]
    lines = ["| " + " | ".join([first, *(c[0] for c in columns)]) + " |",
             "|" + "|".join("---" for _ in range(len(columns) + 1)) + "|"]
    for label, entry in rows:
        name = f"{label} {TRUNCATED_MARK}" if entry.get("truncated_seeds") else label
        lines.append("| " + " | ".join([name, *(format_value(entry, key, kind) for _, key, kind in columns)]) + " |")
    cut = [(label, entry) for label, entry in rows if entry.get("truncated_seeds")]
    if cut:
        counts = [(label, f"{e['truncated_seeds']} of {e.get('n_seeds', '?')} seeds") for label, e in cut]
        where = counts[0][1] if len(cut) == 1 else "; ".join(f"{label}: {n}" for label, n in counts)
        lines += ["", f"{TRUNCATED_MARK} stopped by the wall-clock guard (trainer.max_time) before its step budget in "
                      f"{where}: trained fewer steps than the other rows."]
    return "\n".join(lines) + "\n"


def unfinished_lines(cells: Mapping[str, Mapping], heading: str) -> list[str]:
    """Markdown lines listing the grid's cells that did not finish (by their command), or none."""
    failed = [f"- `{c['command']}`: {c['status']}" for c in cells.values() if c["status"] not in ("done", "skipped")]
    return [heading, "", *failed, ""] if failed else []


def wall_time(settings: Mapping) -> str:
    """`, cells 39 min` from a study's recorded seconds (the sum of its cells' runs, re-runs that skipped
    finished cells included), `, cells >= 4 min (24 untimed)` when some cells ran before their time was
    recorded, or nothing for files written before times were."""
    seconds, untimed = settings.get("seconds"), settings.get("untimed_cells", 0)
    if not _number(seconds):
        return ""
    return f", cells ≥ {seconds / 60:.0f} min ({untimed} untimed)" if untimed else f", cells {seconds / 60:.0f} min"


def commit_lines(data: Mapping) -> list[str]:
    """A markdown line saying which cells ran other code than most (cells re-run after a change) when the
    cells' commits differ from the study's, else none. `data`: a results json with `cells`
    (grid.statuses) and `settings.git_commit`."""
    cells = [c for c in data["cells"].values() if c.get("git_commit")]
    if not {c["git_commit"] for c in cells} - {data["settings"]["git_commit"]}:
        return []
    usual = Counter(c["git_commit"] for c in cells).most_common(1)[0][0]
    seeds: dict[tuple[str, str], list] = {}  # (name, commit) -> the seeds that ran it
    for c in cells:
        seeds.setdefault((c["name"], c["git_commit"]), []).append(c.get("seed"))
    mixed = {n for n, _ in seeds if sum(name == n for name, _ in seeds) > 1}  # a row whose seeds ran other code
    others = ", ".join(
        f"{n}{' seed ' + ', '.join(map(str, sorted(s))) if n in mixed else ''} `{c[:9]}`"
        for (n, c), s in seeds.items() if c != usual)
    return [f"Cells ran at commit `{usual[:9]}`" + (f", except {others}." if others else "."), ""]


def budget_lines(settings: Mapping, methods: Iterable[str]) -> list[str]:
    """A paragraph giving the steps and batch size each of `methods` trained with; none for files from before
    they were recorded per method."""
    steps, batch = settings.get("max_steps"), settings.get("batch_size", {})
    if not isinstance(steps, Mapping):
        return []
    return ["Training steps (batch size) per method: "
            + ", ".join(f"{m} {steps[m]} ({batch.get(m, '?')})" for m in methods if m in steps) + ".", ""]
