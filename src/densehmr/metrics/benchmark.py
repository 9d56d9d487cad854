"""Timing of DensePose evaluation on synthetic data: python -m densehmr.metrics.benchmark [--instances N].

The target: 2000 instances × 120 points in at most 10 s on 2 CPU cores, all three modes.
(--eval-points beyond a few thousand needs memory for the synthetic distance table.)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from pycocotools import mask as mask_utils

from densehmr.body.assets import COARSE_PARTS, NUM_PARTS, GeodesicEval
from densehmr.metrics.densepose_ap import MODES, DensePoseAP

_SMPL_KAPPA = (0.0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150)


def synthetic_geodesic(num_points: int = 2000, seed: int = 0) -> GeodesicEval:
    """Evaluation points spread over the 24 parts with random UVs; distances between random 3D
    positions (metres, a true metric), condensed in GeodesicEval's order."""
    g = torch.Generator().manual_seed(seed)
    part = torch.arange(num_points) % NUM_PARTS + 1
    pos = torch.rand(num_points, 3, generator=g, dtype=torch.float64) * 0.5
    hi, lo = torch.tril_indices(num_points, num_points, offset=-1)  # row-major: b(b-1)/2 + a order
    pdist = (pos[hi] - pos[lo]).norm(dim=-1).float()
    return GeodesicEval(
        point_part=part,
        point_uv=torch.rand(num_points, 2, generator=g),
        point_face=torch.zeros(num_points, dtype=torch.long),
        point_bary=torch.full((num_points, 3), 1 / 3),
        pdist=pdist,
        transform=torch.arange(num_points),
        mean_geodesic=torch.tensor(_SMPL_KAPPA, dtype=torch.float32),
        coarse_parts=torch.tensor(COARSE_PARTS),
    )


def synthetic_densepose_set(num_instances: int, points: int, seed: int = 0):
    """One person per image: GT with `points` DensePose points and 14 dp_masks, and a detection whose
    IUV map agrees with the GT at most points. Returns (images, gts, dts) as DensePoseAP.update takes."""
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(NUM_PARTS // 2 + 2):
        m = np.zeros((256, 256), dtype=np.uint8)
        m[18 * k : 18 * k + 40, 30:220] = 1
        masks.append(mask_utils.encode(np.asfortranarray(m)))
    images, gts, dts = [], [], []
    for i in range(num_instances):
        w, h = float(rng.uniform(60, 160)), float(rng.uniform(120, 260))
        box = [float(rng.uniform(0, 100)), float(rng.uniform(0, 100)), w, h]
        dp_x, dp_y = rng.uniform(0, 255, points), rng.uniform(0, 255, points)
        part = rng.integers(1, NUM_PARTS + 1, points)
        u, v = rng.random(points), rng.random(points)
        gts.append(
            [
                {
                    "id": i + 1,
                    "bbox": box,
                    "area": w * h * 0.6,
                    "iscrowd": 0,
                    "dp_x": dp_x.tolist(),
                    "dp_y": dp_y.tolist(),
                    "dp_I": part.astype(float).tolist(),
                    "dp_U": u.tolist(),
                    "dp_V": v.tolist(),
                    "dp_masks": masks[:14],
                }
            ]
        )
        iuv = np.zeros((3, int(h), int(w)), dtype=np.uint8)
        iuv[0, int(h) // 8 : -int(h) // 8, int(w) // 8 : -int(w) // 8] = rng.integers(1, NUM_PARTS + 1)
        px = np.minimum((dp_x * w / 255).astype(int), int(w) - 1)
        py = np.minimum((dp_y * h / 255).astype(int), int(h) - 1)
        noise = rng.normal(0, 0.05, (2, points))
        iuv[:, py, px] = np.stack(
            [part, np.clip((u + noise[0]) * 255, 0, 255), np.clip((v + noise[1]) * 255, 0, 255)]
        )
        dts.append([{"bbox": box, "score": float(rng.random()), "iuv": iuv}])
        images.append({"id": i + 1, "height": 400, "width": 300})
    return images, gts, dts


def time_densepose(
    num_instances: int = 2000, points: int = 120, num_eval_points: int = 2000, modes=MODES, seed: int = 0
) -> dict[str, float]:
    """Seconds to evaluate (update in chunks of 256 images + compute), wall and CPU (the CPU time is
    the fair number on a shared machine), with the resulting AP."""
    geodesic = synthetic_geodesic(num_eval_points, seed)
    images, gts, dts = synthetic_densepose_set(num_instances, points, seed)
    metric = DensePoseAP(geodesic, modes=modes)
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, num_instances, 256):
        metric.update(images[i : i + 256], gts[i : i + 256], dts[i : i + 256])
    updated = time.perf_counter()
    values = metric.compute()
    done = time.perf_counter()
    return {
        "instances": num_instances,
        "points": points,
        "eval_points": num_eval_points,
        "threads": torch.get_num_threads(),
        "update_s": updated - start,
        "compute_s": done - updated,
        "total_s": done - start,
        "cpu_s": time.process_time() - cpu,
        **{f"{m}_ap": float(values[f"{m}_ap"]) for m in modes},
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--points", type=int, default=120)
    parser.add_argument("--eval-points", type=int, default=2000)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = time_densepose(args.instances, args.points, args.eval_points, args.modes)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
