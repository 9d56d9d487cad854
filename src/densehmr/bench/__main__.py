"""`python -m densehmr.bench [--quick]`: results/bench.json and results/bench.md (`make bench [QUICK=1]`).

OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE unless set): on a shared machine whose load exceeds
its cores, spinning threads wait at every parallel region for a descheduled sibling, which made 2-thread
torch 5-60x slower than 1 thread on the soft silhouette here (set OMP_WAIT_POLICY=ACTIVE to measure that).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (densehmr.bench imports torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from densehmr.bench import BenchSettings, run_bench  # noqa: E402
from densehmr.bench.stages import STAGE_ORDER  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m densehmr.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two backbones, few repeats, small stage sizes")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder of bench.json and bench.md")
    parser.add_argument("--methods", nargs="+", help="default: every configs/method/*.yaml")
    parser.add_argument("--backbones", nargs="+", help="default: the preset's")
    parser.add_argument("--stages", nargs="*", choices=STAGE_ORDER, help="default: all")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="crop size (default: config's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="cuda: also on the GPU (an error where there is none); cpu: CPU only; auto: cuda where present",
    )
    args = parser.parse_args(argv)

    settings = BenchSettings.quick_preset() if args.quick else BenchSettings()
    changes: dict = {}
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.backbones:
        changes["backbones"] = tuple(args.backbones)
    if args.stages is not None:
        changes["stages"] = tuple(args.stages)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.device != "auto":
        changes["cuda"] = args.device == "cuda"
    if args.image_size or args.threads:
        size = tuple(args.image_size) if args.image_size else settings.method.image_size
        changes["method"] = replace(settings.method, image_size=size, threads=args.threads)
        changes["stage"] = replace(settings.stage, threads=args.threads)
    results = run_bench(replace(settings, **changes), args.out)
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
