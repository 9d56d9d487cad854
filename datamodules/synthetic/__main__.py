"""`python -m datamodules.synthetic --out DIR --split train --num N --size S --seed K`."""

from __future__ import annotations

import argparse
import json
import time

from datamodules.synthetic.writer import SHARD_SIZE, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datamodules.synthetic", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (images/, densepose_<split>.json, ...)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num", type=int, required=True, help="number of images")
    parser.add_argument("--size", type=int, default=256, help="image side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="images per resumable shard")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = generate(
        args.out,
        args.split,
        args.num,
        args.size,
        args.seed,
        device=args.device,
        shard_size=args.shard_size,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    print(json.dumps({"counts": manifest["counts"], "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
