"""Write a synthetic split to disk: images, DensePose-COCO JSON, SPIN npz and a manifest.

Layout under `out`:
    images/<split>/<index:06d>.jpg   (file_name in the JSON and imgname in the npz: "<split>/<index:06d>.jpg",
                                      relative to the image root `out/images`)
    densepose_<split>.json  smpl_<split>.npz  manifest_<split>.json

Every file is written atomically (temporary file, then rename). Work is done in shards of images; a
finished shard is recorded under `out/.shards/<split>/` (npz rows, then the JSON that marks it done),
so an interrupted run continues where it stopped. When all shards exist they are merged into the
final files, the manifest (counts and sha256 of every file) is written last, and the shards are removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from datamodules.synthetic.generator import SyntheticGenerator, SyntheticSample
from densehmr.body.assets import Body
from densehmr.body.regressors import COCO17_NAMES
from densehmr.files import atomic_write_bytes

FORMAT_VERSION = 1
SHARD_SIZE = 20
# SPIN npz rows: name -> (shape of one row, dtype).
ROW_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    "center": ((2,), "float64"),
    "scale": ((), "float64"),
    "pose": ((72,), "float64"),
    "shape": ((10,), "float64"),
    "S": ((17, 4), "float64"),
    "part": ((17, 3), "float64"),
    "has_smpl": ((), "int64"),
    "cam_K": ((3, 3), "float64"),
    "cam_t": ((3,), "float64"),
    "ann_id": ((), "int64"),
}
COCO_SKELETON = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]
CATEGORIES = [
    {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO17_NAMES),
        "skeleton": COCO_SKELETON,
    }
]


@dataclass(frozen=True)
class SplitConfig:
    """What determines a split's content."""

    split: str
    num: int
    size: int
    seed: int
    shard_size: int = SHARD_SIZE
    format_version: int = FORMAT_VERSION


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """SPIN npz arrays (N, ...) from per-annotation row dicts (imgname as a unicode array)."""
    arrays = {
        name: np.asarray([r[name] for r in rows], dtype=dtype).reshape(len(rows), *shape)
        for name, (shape, dtype) in ROW_FIELDS.items()
    }
    arrays["imgname"] = np.asarray([r["imgname"] for r in rows], dtype=str).reshape(len(rows))
    return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ShardStore:
    """Finished shards of one split: `shard_<k>.npz` (rows) then `shard_<k>.json` (the done marker)."""

    def __init__(self, out: Path, config: SplitConfig) -> None:
        self.dir = out / ".shards" / config.split
        self.config = config

    def bounds(self, k: int) -> tuple[int, int]:
        size = self.config.shard_size
        return k * size, min((k + 1) * size, self.config.num)

    @property
    def count(self) -> int:
        return -(-self.config.num // self.config.shard_size)

    def _json(self, k: int) -> Path:
        return self.dir / f"shard_{k:05d}.json"

    def _npz(self, k: int) -> Path:
        return self.dir / f"shard_{k:05d}.npz"

    def load(self, k: int) -> tuple[dict, dict[str, np.ndarray]] | None:
        """Shard k's JSON part and npz rows, or None if it is missing or was made with other settings."""
        try:
            part = json.loads(self._json(k).read_text())
            with np.load(self._npz(k), allow_pickle=False) as data:
                rows = {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None
        if part.get("config") != asdict(self.config) or part.get("bounds") != list(self.bounds(k)):
            return None
        return part, rows

    def save(self, k: int, samples: list[SyntheticSample]) -> None:
        rows = stack_rows([row for s in samples for row in s.rows])
        atomic_write_bytes(self._npz(k), npz_bytes(rows))
        part = {
            "config": asdict(self.config),
            "bounds": list(self.bounds(k)),
            "images": [image_entry(s, self.config.size) for s in samples],
            "annotations": [a for s in samples for a in s.annotations],
        }
        atomic_write_bytes(self._json(k), json.dumps(part, separators=(",", ":")).encode())

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.parent.is_dir() and not any(self.dir.parent.iterdir()):
            self.dir.parent.rmdir()


def image_entry(sample: SyntheticSample, size: int) -> dict:
    return {"id": sample.index + 1, "file_name": sample.file_name, "width": size, "height": size}


def output_paths(out: Path, split: str) -> dict[str, Path]:
    return {
        "json": out / f"densepose_{split}.json",
        "npz": out / f"smpl_{split}.npz",
        "manifest": out / f"manifest_{split}.json",
        "images": out / "images",
    }


def _up_to_date(out: Path, config: SplitConfig) -> dict | None:
    paths = output_paths(out, config.split)
    try:
        manifest = json.loads(paths["manifest"].read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("config") != asdict(config):
        return None
    if not all((out / name).is_file() for name in manifest.get("files", {})):
        return None
    return manifest


def _merge(out: Path, config: SplitConfig, store: ShardStore) -> dict:
    """Final JSON, npz and manifest from all shards; returns the manifest."""
    paths = output_paths(out, config.split)
    images, annotations, row_parts = [], [], []
    for k in range(store.count):
        loaded = store.load(k)
        if loaded is None:
            raise RuntimeError(f"shard {k} of {config.split} is missing at merge time")
        part, rows = loaded
        images += part["images"]
        annotations += part["annotations"]
        row_parts.append(rows)
    rows = {name: np.concatenate([r[name] for r in row_parts]) for name in row_parts[0]}
    coco = {
        "info": {
            "description": "densehmr synthetic DensePose benchmark",
            "version": FORMAT_VERSION,
            **{k: v for k, v in asdict(config).items() if k != "format_version"},
        },
        "licenses": [],
        "categories": CATEGORIES,
        "images": images,
        "annotations": annotations,
    }
    atomic_write_bytes(paths["json"], json.dumps(coco, separators=(",", ":")).encode())
    atomic_write_bytes(paths["npz"], npz_bytes(rows))
    files = {f"images/{im['file_name']}": _sha256(paths["images"] / im["file_name"]) for im in images}
    files[paths["json"].name] = _sha256(paths["json"])
    files[paths["npz"].name] = _sha256(paths["npz"])
    dense = [a for a in annotations if "dp_I" in a]
    manifest = {
        "config": asdict(config),
        "counts": {
            "images": len(images),
            "annotations": len(annotations),
            "annotations_with_dense": len(dense),
            "dense_points": sum(len(a["dp_I"]) for a in dense),
            "smpl_rows": int(len(rows["ann_id"])),
        },
        "files": files,
    }
    atomic_write_bytes(paths["manifest"], json.dumps(manifest, indent=1).encode())
    store.remove()
    return manifest


@contextmanager
def single_threaded() -> Iterator[None]:
    """Torch on one thread: rendering one small image at a time gains nothing from intra-op threads,
    and on a busy machine their synchronisation costs several times the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_shard(generator: SyntheticGenerator, store: ShardStore, k: int, images_dir: Path, bar=None) -> int:
    """Render shard k, write its images, then record it; returns its image count."""
    samples = []
    for index in range(*store.bounds(k)):
        sample = generator.sample(index)
        atomic_write_bytes(images_dir / sample.file_name, encode_jpeg(sample.image, sample.jpeg_quality))
        samples.append(sample)
        if bar is not None:
            bar.update(1)
    store.save(k, samples)
    return len(samples)


# A pool worker's generator and shard store (set once per process by `_init_worker`).
_WORKER: dict = {}


def _init_worker(body: Body, config: SplitConfig, out: Path, device: str) -> None:
    torch.set_num_threads(1)
    _WORKER["generator"] = SyntheticGenerator(body, config.size, config.seed, config.split, device)
    _WORKER["store"] = ShardStore(out, config)
    _WORKER["images"] = output_paths(out, config.split)["images"]


def _worker_shard(k: int) -> int:
    return _write_shard(_WORKER["generator"], _WORKER["store"], k, _WORKER["images"])


def generate(
    out: str | Path,
    split: str,
    num: int,
    size: int,
    seed: int,
    body: Body | None = None,
    device: str = "cpu",
    shard_size: int = SHARD_SIZE,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Generate (or finish, or confirm) split `split` of `num` images under `out`; returns the manifest.

    workers: processes rendering shards in parallel (1: in this process). The output does not depend
    on it: every image is drawn from its own (seed, split, index) stream.
    """
    out = Path(out)
    config = SplitConfig(
        split=split, num=int(num), size=int(size), seed=int(seed), shard_size=int(shard_size)
    )
    manifest = _up_to_date(out, config)
    if manifest is not None:
        return manifest
    if body is None:
        from densehmr.body import load_body

        body = load_body("open")
    store = ShardStore(out, config)
    todo = [k for k in range(store.count) if store.load(k) is None]
    done = config.num - sum(len(range(*store.bounds(k))) for k in todo)
    images_dir = output_paths(out, split)["images"]
    bar = tqdm(total=config.num, initial=done, desc=f"synthetic {split}", unit="img", disable=not progress)
    with bar:
        if workers <= 1 or len(todo) <= 1:
            with single_threaded():
                generator = SyntheticGenerator(body, size, seed, split, device) if todo else None
                for k in todo:
                    _write_shard(generator, store, k, images_dir, bar)
        else:
            # fork shares the loaded body with the workers instead of pickling it to each.
            context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with context.Pool(workers, _init_worker, (body, config, out, device)) as pool:
                for count in pool.imap_unordered(_worker_shard, todo):
                    bar.update(count)
    return _merge(out, config, store)
