"""What the study commands share: composing the training config, the settings and provenance a results
file records (git commit, the command line), W&B credentials, and writing json."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from densehmr.files import atomic_write_bytes
from densehmr.runs import compose_train
from densehmr.train import CONFIG_DIR

ROOT = Path(CONFIG_DIR).parent


def config_error(err: Exception) -> int:
    """A bad override (unknown key, group or value) in one line, exit status 2, as densehmr.train does."""
    print(f"error: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
    return 2


def same_config(a: DictConfig, b: DictConfig) -> bool:
    # Unresolved, so `${now:...}` compares as text rather than as two clock readings.
    return OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)


def canonical_overrides(method: str, overrides: Sequence[str], shared: Sequence[str] = ()) -> list[str]:
    """`overrides` without those that change nothing for `method` (e.g. `ablation=full`, or a value equal to
    the default), so that one cell reached from two studies gets one name and one run."""
    base_args = [f"method={method}", *shared]
    base = compose_train(base_args)
    return [o for o in overrides if not same_config(compose_train([*base_args, o]), base)]


def run_settings(cfg: DictConfig) -> dict:
    """The settings a comparison holds fixed, read from a composed config (not from the command line, so
    that defaults are recorded too). The steps and batch size are each method's own: `method_budgets`."""
    trainer = cfg.trainer
    return {
        "image_size": list(cfg.image_size),
        "backbone": cfg.backbone.name,
        "data_train": [str(d.root) for d in cfg.data.train],
        "data_val": [str(d.root) for d in cfg.data.val],
        "trainer": {k: trainer.get(k) for k in ("accelerator", "devices", "max_epochs", "max_time", "precision")
                    if k in trainer},
        "logger": cfg.logger.get("_target_") if cfg.get("logger") else None,
    }


def method_budgets(configs: Mapping[str, DictConfig]) -> dict[str, dict[str, int | None]]:
    """Each method's steps and batch size from its composed config, as {"max_steps": {method: n},
    "batch_size": {method: n}}: the CPU default fits every method's steps to one wall-clock budget
    (configs/method/*.yaml, cpu_steps), so they differ between methods and are recorded per method."""
    return {"max_steps": {m: cfg.trainer.get("max_steps") for m, cfg in configs.items()},
            "batch_size": {m: int(cfg.method.batch_size) for m, cfg in configs.items()}}


def git_commit() -> str:
    """HEAD's commit, `+dirty` when the working tree has changes; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def invocation(module: str, argv: Sequence[str] | None = None) -> str:
    """The command line that ran this study, to be pasted again."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(options, Hydra overrides): `key=value`, `+key=value` and `~key` are overrides wherever they stand, so
    that `--seeds 0 1 trainer.max_steps=10` does not read the override as a seed."""
    options, overrides = [], []
    for arg in argv:
        is_override = not arg.startswith("-") and ("=" in arg or arg.startswith("~"))
        (overrides if is_override else options).append(arg)
    return options, overrides


def parse_study_args(module: str, doc: str, runs: str, seeds_help: str, argv: Sequence[str] | None,
                     extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every study takes (--seeds, --out, --runs, --no-progress, --collect, plus `extra`'s) and its Hydra
    overrides (`key=value` anywhere on the line, applied to every cell) as `.overrides`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", help=seeds_help)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--runs", type=Path, default=Path(runs))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--collect", action="store_true",
                        help="run no cell: the tables from the cells finished so far (the rest listed as not run)")
    if extra is not None:
        extra(parser)
    parser.epilog = "Hydra overrides (key=value, anywhere on the line) apply to every cell."
    options, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(options)
    args.overrides = overrides
    return args


def wandb_unavailable() -> str | None:
    """Why W&B cannot be used online here (None when it can): the same rule as the training logger."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={mode}"
    if not os.environ.get("WANDB_API_KEY") and not (Path.home() / ".netrc").exists():
        return "no WANDB_API_KEY and no ~/.netrc"
    return None


def _finite(obj):
    # Strict JSON has no NaN/Infinity; a metric that could not be computed is written as null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, data: dict) -> Path:
    atomic_write_bytes(Path(path), (json.dumps(_finite(data), indent=2, default=str) + "\n").encode())
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)
