"""Loader throughput: samples/s of the training DataLoader on a fixture dataset in the real formats.

    python -m datamodules.benchmark --images 200 --size 128 128 --workers 2

The fixture (random smooth images, DensePose-COCO JSON with ~100 points, 14 RLE part masks, polygons and
keypoints per person, and a SPIN-format npz) is written to a temporary folder; augmentation is on.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from densehmr.body.assets import Body

DP_POINTS = 100


def _smooth_image(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image with structure at several scales (compresses like a photo, unlike noise)."""
    out = np.zeros((*hw, 3), dtype=np.float32)
    for cells in (4, 16, 64):
        coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
        out += cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC) / 3
    return np.clip(out, 0, 255).astype(np.uint8)


def _part_masks(rng: np.random.Generator) -> list:
    """14 DensePose part masks (256x256 over the box) as compressed RLE; some empty ([])."""
    masks = []
    for _ in range(14):
        if rng.random() < 0.2:
            masks.append([])
            continue
        grid = np.zeros((256, 256), dtype=np.uint8)
        centre = tuple(int(c) for c in rng.integers(40, 216, size=2))
        axes = tuple(int(a) for a in rng.integers(10, 50, size=2))
        cv2.ellipse(grid, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        rle = mask_utils.encode(np.asfortranarray(grid))
        masks.append({"size": [256, 256], "counts": rle["counts"].decode()})
    return masks


def write_fixture_dataset(
    root: str | Path,
    split: str = "train",
    num_images: int = 50,
    people_per_image: int = 2,
    image_hw: tuple[int, int] = (480, 640),
    seed: int = 0,
) -> Path:
    """Write `densepose_{split}.json`, `images/` and `smpl_{split}.npz` under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = image_hw
    images, annotations, rows = [], [], []
    for image_id in range(1, num_images + 1):
        name = f"{image_id:06d}.jpg"
        cv2.imwrite(str(root / "images" / name), _smooth_image(rng, image_hw), [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for _ in range(people_per_image):
            bw, bh = rng.uniform(0.15, 0.5) * w, rng.uniform(0.3, 0.9) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            ann_id = len(annotations) + 1
            keypoints = np.stack([rng.uniform(x, x + bw, 17), rng.uniform(y, y + bh, 17), rng.integers(0, 3, 17)], 1)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x, y, bw, bh],
                    "area": 0.6 * bw * bh,
                    "num_keypoints": int((keypoints[:, 2] > 0).sum()),
                    "keypoints": keypoints.reshape(-1).tolist(),
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                    "dp_x": rng.uniform(0, 256, DP_POINTS).tolist(),
                    "dp_y": rng.uniform(0, 256, DP_POINTS).tolist(),
                    "dp_I": rng.integers(1, 25, DP_POINTS).astype(float).tolist(),
                    "dp_U": rng.uniform(0, 1, DP_POINTS).tolist(),
                    "dp_V": rng.uniform(0, 1, DP_POINTS).tolist(),
                    "dp_masks": _part_masks(rng),
                }
            )
            rows.append((ann_id, name, x + bw / 2, y + bh / 2, max(bw, bh) / 200, keypoints))
    (root / f"densepose_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]})
    )
    n = len(rows)
    np.savez(
        root / f"smpl_{split}.npz",
        ann_id=np.array([r[0] for r in rows], dtype=np.int64),
        imgname=np.array([r[1] for r in rows]),
        center=np.array([[r[2], r[3]] for r in rows]),
        scale=np.array([r[4] for r in rows]),
        pose=rng.normal(scale=0.2, size=(n, 72)),
        shape=rng.normal(size=(n, 10)),
        S=np.concatenate([rng.normal(scale=0.4, size=(n, 17, 3)) + [0, 0, 5], np.ones((n, 17, 1))], -1),
        part=np.stack([r[5] for r in rows]),
        has_smpl=np.ones(n),
        cam_K=np.tile([[1000.0, 0, w / 2], [0, 1000.0, h / 2], [0, 0, 1]], (n, 1, 1)),
        cam_t=np.tile([0.0, 0.0, 5.0], (n, 1)),
    )
    return root


@dataclass(frozen=True)
class Throughput:
    """Wall-clock samples/s, and CPU ms per sample spent in the workers and in the main process."""

    samples_per_s: float
    worker_cpu_ms: float
    main_cpu_ms: float

    def cpu_bound_rate(self, workers: int) -> float:
        """Samples/s the loader sustains when its `workers` have a core each (nothing else running)."""
        return 1000.0 / max(self.worker_cpu_ms / workers, self.main_cpu_ms)


def measure(
    body: Body,
    root: Path,
    image_size: tuple[int, int] = (128, 128),
    batch_size: int = 32,
    workers: int = 2,
    batches: int = 40,
) -> Throughput:
    """Throughput of the train DataLoader over `batches` batches after a warm-up batch (augmentation on)."""
    from datamodules.datamodule import DenseHMRDataModule

    spec = {"name": "fixture", "root": str(root), "densepose_json": "densepose_train.json"}
    datamodule = DenseHMRDataModule(
        train=[{**spec, "smpl_npz": "smpl_train.npz"}],
        image_size=image_size,
        batch_size=batch_size,
        num_workers=workers,
        body=body,
        samples_per_epoch=batch_size * (batches + 1),
    )
    datamodule.setup("fit")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    main = time.process_time()
    loader = datamodule.train_dataloader()
    batches_iter = iter(loader)
    warmup = len(next(batches_iter)["image"])
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in batches_iter)
    wall = time.perf_counter() - start
    main_cpu = time.process_time() - main
    del batches_iter, loader
    gc.collect()  # the persistent workers exit and are reaped, so their CPU time is counted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    total = warmup + count
    if workers == 0:
        worker_cpu, main_cpu = main_cpu, 0.0
    return Throughput(count / wall, 1000 * worker_cpu / total, 1000 * main_cpu / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--image-hw", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), help="crop H W")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--body", default="open")
    args = parser.parse_args()
    from densehmr.body import load_body

    body = load_body(args.body)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fixture_dataset(tmp, num_images=args.images, image_hw=tuple(args.image_hw))
        result = measure(body, root, tuple(args.size), args.batch_size, args.workers, args.batches)
    crop, image = "x".join(map(str, args.size)), "x".join(map(str, args.image_hw))
    print(f"crop {crop}, images {image}, {args.workers} workers, batch {args.batch_size}:")
    print(f"  measured          {result.samples_per_s:8.1f} samples/s (wall clock, shared machine)")
    cpu = f"{result.worker_cpu_ms:8.2f} ms in workers, {result.main_cpu_ms:.2f} ms in the main process"
    print(f"  CPU per sample    {cpu}")
    if args.workers:
        print(f"  CPU-bound rate    {result.cpu_bound_rate(args.workers):8.1f} samples/s with a free core per worker")


if __name__ == "__main__":
    main()
