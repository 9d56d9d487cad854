"""`python -m densehmr.gpu_check [--dry-run]` (`make gpu-check [DRY_RUN=1]`): see the package's doc."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from densehmr.gpu_check.forward import ForwardResult, compare_method
from densehmr.gpu_check.renderer import check_renderer
from densehmr.gpu_check.report import write_report
from densehmr.gpu_check.settings import CheckSettings, dry_run, full_check
from densehmr.gpu_check.training import TrainResult, end_distributed, train_method
from densehmr.runs import compose_train

REPORT = Path("results/gpu_check.md")
DRY_RUN_REPORT = Path("outputs/gpu_check/gpu_check_dry_run.md")
WORK = Path("outputs/gpu_check")
NO_CUDA = ("gpu-check: no CUDA device here (torch {torch} sees none), nothing checked; run it on a machine "
           "with a GPU, or `make gpu-check DRY_RUN=1` to exercise it on the CPU")


def environment(settings: CheckSettings) -> dict[str, str]:
    """The machine and software the check ran on, for the report."""
    facts = {"torch": torch.__version__, "python": platform.python_version(), "CPU cores": str(os.cpu_count())}
    if settings.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts |= {"device": f"{props.name}, {props.total_memory / 2**30:.0f} GiB",
                  "CUDA (torch built with)": str(torch.version.cuda), "cuDNN": str(torch.backends.cudnn.version())}
    else:
        facts["device"] = f"CPU ({platform.processor() or platform.machine()})"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        facts["commit"] = commit.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return facts


def make_data(settings: CheckSettings, root: Path) -> Path:
    """The small synthetic benchmark the check trains and compares on (kept and reused; resumable)."""
    from datamodules.synthetic import generate

    folder = root / f"data_{settings.train_images}_{settings.val_images}_{settings.image_px}"
    workers = max(1, settings.num_workers)
    for split, count in (("train", settings.train_images), ("val", settings.val_images)):
        generate(folder / split, split, count, settings.image_px, seed=0, workers=workers, progress=False)
    return folder


def forward_config(method: str, settings: CheckSettings, data: Path):
    return compose_train([
        f"method={method}", f"experiment=paper_{method}", *settings.overrides, "logger=none",
        f"data.train.0.root={data / 'train'}", f"data.val.0.root={data / 'val'}", "data.num_workers=0",
        f"data.eval_batch_size={settings.forward_batch}",
    ])


def say(what: str, start: float) -> None:
    print(f"gpu-check: {what} ({time.perf_counter() - start:.0f} s)", flush=True)


def run_check(settings: CheckSettings, report: Path, work: Path) -> bool:
    """Every check of the package's doc; writes `report` and returns whether all passed."""
    start = time.perf_counter()
    data = make_data(settings, work)
    say(f"data ready in {data}", start)
    render = check_renderer(settings)
    say(f"renderer {'pass' if render.ok else 'FAIL'}", start)
    forwards: list[ForwardResult] = []
    for method in settings.methods:
        forwards.append(compare_method(method, forward_config(method, settings, data), settings))
        say(f"forward {method} {'pass' if forwards[-1].ok else 'FAIL'}", start)
    trains: list[TrainResult] = []
    for method in settings.methods:
        trains.append(train_method(method, settings, data, work))
        end_distributed()
        say(f"training {method} {trains[-1].status} ({trains[-1].steps_per_s:.2f} steps/s)", start)
    seconds = time.perf_counter() - start
    write_report(report, settings, environment(settings), trains, forwards, render, seconds)
    return all(r.ok for r in trains) and all(r.ok for r in forwards) and render.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="everything on the CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the report (default {REPORT}; dry run: {DRY_RUN_REPORT})")
    parser.add_argument("--work", type=Path, default=WORK, help="data and runs of the check")
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__))
        return 0
    settings = dry_run() if args.dry_run else full_check()
    if args.methods:
        settings = CheckSettings(**{**settings.__dict__, "methods": tuple(args.methods)})
    report = args.out or (DRY_RUN_REPORT if args.dry_run else REPORT)
    ok = run_check(settings, report, args.work)
    print(f"gpu-check: {'pass' if ok else 'FAIL'}; report: {report}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
