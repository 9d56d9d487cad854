"""`python -m densehmr.studies.sweep <name> [overrides...]` (`make sweep SWEEP=<name>`): a W&B sweep from
configs/sweeps/<name>.yaml, run by a local agent.

The sweep files are the one definition of the ablation grids: densehmr.studies.ablation reads them for
`make ablation`, and `multirun_command` turns one into the equivalent Hydra multirun. A grid may list, under
`evaluation_only`, parameters that act only when a trained model is evaluated (a decoding, say): `make
ablation` trains without them and evaluates each trained model once per value; W&B, which has no such runs,
trains one model per value. Without W&B
credentials (or with WANDB_MODE offline/disabled) the command prints one line saying what to do instead
and exits 2; it never prompts.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from densehmr.studies.common import split_overrides
from densehmr.train import CONFIG_DIR

SWEEPS_DIR = Path(CONFIG_DIR) / "sweeps"


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


EVALUATION_ONLY = "evaluation_only"
# Parameters that pick the run itself, never an evaluation of it.
RUN_PARAMETERS = ("method", "seed")


def load_sweep(name: str | Path) -> dict:
    """A sweep file by name (configs/sweeps/<name>.yaml) or path, its `evaluation_only` list checked. Plain
    YAML: `${env}` in `command` is W&B's macro, so OmegaConf (which would resolve it) is not used."""
    path = Path(name) if str(name).endswith(".yaml") else SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no sweep {name!r}; known: {', '.join(sweep_names())}")
    sweep = yaml.safe_load(path.read_text())
    listed = sweep.get(EVALUATION_ONLY, [])
    allowed = [k for k in sweep["parameters"] if k not in RUN_PARAMETERS]
    if not isinstance(listed, list):
        raise ValueError(f"{path}: {EVALUATION_ONLY}: expected a list of parameters, got {listed!r}")
    for key in listed:
        if key not in allowed:
            raise ValueError(f"{path}: {EVALUATION_ONLY}: {key!r} is not one of the grid's parameters {allowed}")
    return sweep


def evaluation_only(sweep: Mapping) -> tuple[str, ...]:
    """The grid's parameters that act only at evaluation (its `evaluation_only` list; none by default)."""
    return tuple(sweep.get(EVALUATION_ONLY, ()))


def parameter_values(sweep: dict) -> dict[str, list]:
    """Parameter -> its values, in the file's order (`value: x` is a one-value list)."""
    out = {}
    for key, spec in sweep["parameters"].items():
        if "values" in spec:
            out[key] = list(spec["values"])
        elif "value" in spec:
            out[key] = [spec["value"]]
        else:
            raise ValueError(f"sweep parameter {key!r}: a grid needs `value` or `values`, got {spec}")
    return out


def expand_grid(sweep: dict, exclude: Sequence[str] = ()) -> list[dict]:
    """Every combination of the parameters (as W&B's grid search runs them), less the `exclude` keys."""
    values = {k: v for k, v in parameter_values(sweep).items() if k not in exclude}
    return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]


def hydra_value(value) -> str:
    """A value as Hydra's override grammar reads it back (true/false/null, not Python's True/None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def override(key: str, value) -> str:
    return f"{key}={hydra_value(value)}"


def multirun_command(sweep: dict, extra: Sequence[str] = (), python: str = "python") -> str:
    """The Hydra multirun that trains the sweep's grid locally, e.g.
    `python -m densehmr.train -m method=pymaf pymaf.feedback=global,grid,mesh_aligned seed=0,1`."""
    args = [f"{k}={','.join(hydra_value(v) for v in vs)}" for k, vs in parameter_values(sweep).items()]
    return shlex.join([python, "-m", "densehmr.train", "-m", *args, *extra])


def wandb_config(sweep: dict, extra: Sequence[str]) -> dict:
    """The sweep as W&B takes it: fixed overrides (e.g. the training budget) appended to its command, and
    without `evaluation_only`, which is this project's key, not W&B's."""
    config = {k: v for k, v in sweep.items() if k != EVALUATION_ONLY}
    return {**config, "command": [*sweep["command"], *extra]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.studies.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"one of: {', '.join(sweep_names())}")
    parser.add_argument("--count", type=int, help="runs for this agent (default: the whole grid)")
    parser.epilog = "Hydra overrides (key=value, anywhere on the line) apply to every run of the sweep."
    options, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(options)
    args.overrides = overrides
    try:
        sweep = load_sweep(args.name)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from densehmr.studies.common import compose_train, wandb_unavailable

    reason = wandb_unavailable()
    if reason:
        local = multirun_command(sweep, args.overrides)
        print(f"error: a W&B sweep needs W&B online ({reason}): run `wandb login` (or set WANDB_API_KEY), or run "
              f"the same grid locally: `make ablation TABLES={args.name}` or `{local}`", file=sys.stderr)
        return 2
    import wandb

    logger = compose_train(["logger=wandb"]).logger
    sweep_id = wandb.sweep(wandb_config(sweep, args.overrides), project=logger.project, entity=logger.entity)
    wandb.agent(sweep_id, project=logger.project, entity=logger.entity, count=args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
