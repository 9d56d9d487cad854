"""Completing a study in parts: what a results file keeps from the one it replaces.

A study run on a subset (`compare --methods`, `ablation --tables`) writes the same results file as the full
study. The parts it did not run (methods, tables) are carried over from the file already there, with their
cells and the command that made them, when both were made with the same settings; so one method can be
re-run after a change, or a table finished in a later session, without training everything again (the run
folders, which hold the checkpoints, need not survive: every finished cell's metrics live in the file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# What must agree for parts of two runs to sit in one results file; the overrides are compared as Hydra
# applies them.
SETTINGS = ("image_size", "backbone", "data_train", "data_val", "trainer")
# Settings each method has its own of (`densehmr.studies.common.method_budgets`): compared per method.
PER_METHOD = ("max_steps", "batch_size")


def override_values(overrides: Sequence[str]) -> dict[str, str]:
    """Hydra overrides as key -> value, the last of a repeated key winning, as Hydra applies them."""
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)


def same_settings(a: Mapping, b: Mapping, keys: Sequence[str] = SETTINGS) -> bool:
    """Both settings agree on `keys`, on the overrides, and on the steps and batch size of every method
    both record."""
    per_method = all(x[m] == y[m] for k in PER_METHOD for x, y in [(a.get(k) or {}, b.get(k) or {})]
                     for m in x.keys() & y.keys())
    return (per_method and all(a.get(k) == b.get(k) for k in keys)
            and override_values(a.get("overrides", ())) == override_values(b.get("overrides", ())))


def read_previous(path: Path, parts: str) -> dict | None:
    """The results file at `path` (a dict with `settings`, `cells` and `parts`), or None when there is none
    or it is not one (a warning says so)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"settings", "cells", parts} <= data.keys():
            return data
    except (OSError, ValueError):
        pass
    print(f"warning: {path}: not a results file of this study; nothing kept from it", file=sys.stderr)
    return None


def keep_parts(
    data: dict, previous: Mapping | None, parts: str, names: Sequence[str], cell_keys: Mapping[str, Sequence[str]],
    keys: Sequence[str] = SETTINGS,
) -> list[str]:
    """Copy into `data` the entries `names` of `previous[parts]` (those this run did not make), with the
    cells listed for each in `cell_keys` (by run folder), when both files share their settings (`keys` and
    the overrides); record where each came from in `data["kept"]`. The names kept, in the order given."""
    if previous is None or not names:
        return []
    if not same_settings(previous["settings"], data["settings"], keys):
        print(f"warning: the earlier results were made with other settings; {', '.join(names)} not kept",
              file=sys.stderr)
        return []
    earlier = previous.get("kept", {})
    for name in names:
        data[parts][name] = previous[parts][name]
        for key in cell_keys.get(name, ()):
            if key in previous["cells"]:  # a cell this run made too (shared by two tables) keeps its new record
                data["cells"].setdefault(key, previous["cells"][key])
        data.setdefault("kept", {})[name] = earlier.get(name) or {"command": previous["command"],
                                                                  "written": previous["written"]}
    return list(names)


def kept_lines(data: Mapping, what: str) -> list[str]:
    """Markdown lines naming the `what` (rows, tables) carried over from earlier runs, per command; or none."""
    by_command: dict[tuple[str, str], list[str]] = {}
    for name, origin in data.get("kept", {}).items():
        by_command.setdefault((origin["command"], origin["written"]), []).append(name)
    return [f"{what.capitalize()} {', '.join(names)}: kept from `{command}` ({written}), made with the same "
            "settings." for (command, written), names in by_command.items()] + ([""] if by_command else [])


def made_by(data: Mapping, name: str) -> str:
    """The command that made the entry `name` of a results file (its own, or the one it was kept from)."""
    origin = data.get("kept", {}).get(name)
    return origin["command"] if origin else data.get("command", "")
