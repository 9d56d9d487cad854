"""Running a grid of cells (one training or evaluation each), resumably and crash-tolerantly.

Each cell runs in its own process (`python -m densehmr.train ...`), so a crash, an out-of-memory kill or
a stuck CUDA context ends that cell only. A cell whose run folder already holds a complete metrics.json
from the same command (for an evaluation: made after its checkpoint) is skipped, so running a grid again
resumes it; a training the same command left unfinished with a checkpoint continues from it
(`train resume=<run dir>`, which resumes exactly) instead of starting over.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from densehmr.files import atomic_write_bytes
from densehmr.run_record import INTERRUPTED, STOPPED_BY
from densehmr.studies.common import git_commit

TRAIN = "densehmr.train"
EVALUATE = "densehmr.evaluate"
FINISHED = ("done", "skipped")  # statuses of a cell whose metrics.json is complete


def hydra_string(value: object) -> str:
    """`value` as a Hydra override value: quoted when it holds characters the grammar would read otherwise
    (`=`, `,`, spaces, brackets...)."""
    text = str(value)
    if re.fullmatch(r"[\w./+:@~-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Cell:
    """One run of the grid: `python -m <entry> method=<method> <overrides> seed=<seed> run_dir=<run_dir>`.

    requires: a file that must exist before the cell can run (an evaluation's checkpoint); a cell whose
    requirement is missing is reported as blocked, not run.
    """

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    seed: int = 0
    run_dir: Path = Path("runs/studies/cell")
    entry: str = TRAIN
    requires: Path | None = None
    resume: bool = False  # continue the unfinished training in run_dir instead of starting it

    def __post_init__(self) -> None:
        # Lists are accepted; a tuple keeps the cell hashable (grids dedupe cells).
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def args(self) -> list[str]:
        """The command line after the interpreter (the cell's identity, also when it resumes)."""
        return ["-m", self.entry, f"method={self.method}", *self.overrides, f"seed={self.seed}",
                f"run_dir={hydra_string(self.run_dir)}"]

    def run_args(self) -> list[str]:
        """The command line that runs it now: `args()`, or the resumption of its run under its saved config."""
        if self.resume:
            return ["-m", self.entry, f"method={self.method}", f"resume={hydra_string(self.run_dir)}"]
        return self.args()

    def command(self) -> str:
        """The command a person can paste to make this cell again."""
        return shlex.join(["python", *self.args()])

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def log_path(self) -> Path:
        # train.out for a training, evaluate.out for an evaluation.
        return self.run_dir / f"{self.entry.rsplit('.', 1)[-1]}.out"


@dataclass
class CellResult:
    """What happened to a cell: done (ran now), skipped (finished before), failed, blocked, or not run (a
    grid that only collects finished cells)."""

    cell: Cell
    status: str
    returncode: int | None = None
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)
    commit: str = ""

    @property
    def ok(self) -> bool:
        return self.status in FINISHED


Runner = Callable[[Cell, Path], int]


def subprocess_runner(cell: Cell, log_path: Path) -> int:
    """Run the cell in a fresh Python process, stdout and stderr into `log_path` (appended to when it
    resumes); its exit code."""
    with open(log_path, "ab" if cell.resume else "wb") as log:
        return subprocess.run([sys.executable, *cell.run_args()], stdout=log, stderr=subprocess.STDOUT).returncode


def read_metrics(path: Path) -> dict | None:
    """metrics.json's dict, or None when it is missing, unreadable, empty or the record of an interrupted
    training (an unfinished run)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    finished = isinstance(data, dict) and data and data.get(STOPPED_BY) != INTERRUPTED
    return data if finished else None


def _cell_record(cell: Cell) -> dict:
    """The cell's cell.json (command, args, and once run: seconds, git_commit), or {} if unreadable."""
    try:
        record = json.loads((cell.run_dir / "cell.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def is_finished(cell: Cell, record: dict | None = None) -> bool:
    """metrics.json is complete, was made by this very command (a run folder made with other settings,
    e.g. another training budget, does not count) and is not older than the file the cell requires (an
    evaluation of a checkpoint trained again since is stale). `record`: the cell's cell.json if already read."""
    recorded = (_cell_record(cell) if record is None else record).get("args")
    if read_metrics(cell.metrics_path) is None or recorded not in (None, cell.args()):
        return False
    return cell.requires is None or not Path(cell.requires).exists() or (
        cell.metrics_path.stat().st_mtime >= Path(cell.requires).stat().st_mtime)


def resumable_seconds(cell: Cell, record: dict) -> float | None:
    """If `cell` is a training its own command left unfinished with a checkpoint: the seconds that run had
    spent until its newest checkpoint (0 when it never recorded its start); else None."""
    checkpoints = list((cell.run_dir / "checkpoints").glob("*.ckpt"))
    if cell.entry != TRAIN or record.get("args") != cell.args() or not checkpoints:
        return None
    if not (cell.run_dir / "config.yaml").is_file() or read_metrics(cell.metrics_path) is not None:
        return None
    started, earlier = record.get("started"), float(record.get("seconds_before", 0.0))
    if not isinstance(started, int | float):
        return earlier
    return earlier + max(0.0, max(p.stat().st_mtime for p in checkpoints) - started)


def _set_aside(run_dir: Path) -> Path:
    """Move a run that another command made out of the way (never delete a person's results)."""
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.replaced-{n}")).exists():
        n += 1
    run_dir.rename(target)
    return target


def log_tail(path: Path, lines: int = 15) -> list[str]:
    """The last `lines` non-empty lines of a log; progress bars' carriage returns count as line ends."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()][-lines:]


def run_cell(cell: Cell, runner: Runner = subprocess_runner, tail_lines: int = 15, run: bool = True) -> CellResult:
    """Run one cell unless it is finished already (see `is_finished`); with run=False, only read it."""
    recorded = _cell_record(cell)
    if is_finished(cell, recorded):
        seconds = recorded.get("seconds")
        return CellResult(cell, "skipped", 0, float(seconds) if isinstance(seconds, int | float) else 0.0,
                          commit=str(recorded.get("git_commit", "")))
    if not run:
        return CellResult(cell, "not run")
    if cell.requires is not None and not Path(cell.requires).exists():
        return CellResult(cell, "blocked", None, tail=[f"missing {cell.requires}"])
    before = resumable_seconds(cell, recorded)
    if before is not None:
        cell = replace(cell, resume=True)
    elif read_metrics(cell.metrics_path) is not None or any((cell.run_dir / "checkpoints").glob("*.ckpt")):
        _set_aside(cell.run_dir)
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    commit = now = git_commit()
    extra = {}
    if cell.resume and recorded.get("git_commit"):
        # The commit it started at names the cell; one that continues under other code says so.
        commit = str(recorded["git_commit"])
        extra = {"resumed_at_commit": now} if now != commit else {}
    record = {"name": cell.name, "command": cell.command(), "args": cell.args(), "git_commit": commit, **extra,
              "started": time.time(), "seconds_before": round(before or 0.0, 1)}
    atomic_write_bytes(cell.run_dir / "cell.json", (json.dumps(record, indent=2) + "\n").encode())
    start = time.perf_counter()
    code = runner(cell, cell.log_path)
    seconds = (before or 0.0) + time.perf_counter() - start
    atomic_write_bytes(cell.run_dir / "cell.json", (json.dumps({**record, "seconds": round(seconds, 1)}, indent=2)
                                                    + "\n").encode())
    # A zero exit without metrics (e.g. killed between fit and test) is a failure too.
    if code == 0 and read_metrics(cell.metrics_path) is not None:
        return CellResult(cell, "done", 0, seconds, commit=commit)
    return CellResult(cell, "failed", code, seconds, log_tail(cell.log_path, tail_lines), commit)


def run_grid(
    cells: Iterable[Cell], runner: Runner = subprocess_runner, progress: bool = True, tail_lines: int = 15,
    desc: str = "grid", run: bool = True,
) -> list[CellResult]:
    """Run every cell in order, going on after a failure; one result per cell, in order. run=False runs
    none: the finished cells are read and the others reported as not run.

    A failed cell is reported on stderr (exit code and the last lines of its log, kept in its run folder).
    """
    cells = list(cells)
    results = []
    bar = tqdm(cells, desc=desc, unit="cell", disable=not progress, file=sys.stderr)
    for cell in bar:
        bar.set_postfix_str(f"{cell.name} seed={cell.seed}")
        result = run_cell(cell, runner, tail_lines, run)
        results.append(result)
        if result.status in ("failed", "blocked"):
            tqdm.write(describe_failure(result), file=sys.stderr)
    bar.close()
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "blocked", "not run")}
    print(f"{desc}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
    return results


def describe_failure(result: CellResult) -> str:
    cell = result.cell
    if result.status == "blocked":
        return f"{cell.name} seed={cell.seed}: blocked ({'; '.join(result.tail)})"
    head = f"{cell.name} seed={cell.seed}: failed with exit code {result.returncode}; log: {cell.log_path}"
    return "\n".join([head, *(f"    {ln}" for ln in result.tail)])


def timing(cells: Mapping[str, Mapping]) -> dict[str, int]:
    """A study's wall time from its cells' records (`statuses`): `seconds`, the sum of its cells' runs (as
    recorded for skipped ones), and `untimed_cells`, the finished cells whose time was never recorded."""
    return {"seconds": round(sum(c["seconds"] for c in cells.values())),
            "untimed_cells": sum(c["status"] in FINISHED and not c["seconds"] for c in cells.values())}


def statuses(results: Sequence[CellResult]) -> dict[str, dict]:
    """Per cell (by run folder): status, exit code, seconds, the commit it ran, the command and, once
    finished, its metrics, so that a results json holds every seed's numbers after the run folders are gone."""
    table = {}
    for r in results:
        record = {"name": r.cell.name, "seed": r.cell.seed, "status": r.status, "returncode": r.returncode,
                  "seconds": round(r.seconds, 1), "git_commit": r.commit, "command": r.cell.command()}
        if r.ok and (metrics := read_metrics(r.cell.metrics_path)) is not None:
            record["metrics"] = metrics
        table[str(r.cell.run_dir)] = record
    return table
