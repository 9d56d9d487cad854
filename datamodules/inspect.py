"""A first look at a dataset, read with the same readers as training.

    python -m datamodules.inspect --densepose-json ann.json --image-root images [--npz fits.npz]
    python -m datamodules.inspect --npz h36m_valid_protocol2.npz --image-root /data/h36m --box-padding 1.2
    python -m datamodules.inspect --config h36m data.root=/data/h36m [--split val] [--json]

Files open sources in order: each --densepose-json starts one, and the first --npz after it (before the
next --densepose-json) is its SMPL sidecar; any other --npz (before every --densepose-json, or a second
one) is a source of its own; --image-root and --box-padding apply to the latest source.

Per source it prints the samples and person records, images found / missing, how an npz joined, how
many samples carry each supervision (has_dp, has_kp2d, has_kp3d, has_smpl, has_cam, has_mask; has_cam
counts cameras from the file, fitted to S, or fittable to the keypoints) and the problems found, one
line each; it draws a grid of samples with their targets into a PNG.
--json prints the summary as JSON only (stdout), the log goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from datamodules.camera_fit import MIN_FIT_JOINTS
from datamodules.datamodule import DatasetSpec, make_reader
from datamodules.dataset import DenseHMRDataset, Skipped
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader, RawSample, SampleReader
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from densehmr.body.assets import Body

SUPERVISION = ("has_dp", "has_kp2d", "has_kp3d", "has_smpl", "has_cam", "has_mask")
GRID_COLUMNS = 4
EXAMPLES = 3  # missing image paths named per source


@dataclass
class SourceSummary:
    """What one source holds and what is wrong with it."""

    name: str
    files: dict[str, str]
    samples: int = 0
    persons: int = 0
    images: dict[str, int] = field(default_factory=lambda: {"found": 0, "missing": 0})
    join: dict[str, Any] | None = None
    supervision: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUPERVISION, 0))
    problems: list[str] = field(default_factory=list)


def supervision_of(raw: RawSample) -> dict[str, bool]:
    """Which targets a person carries, from its record (without reading the image)."""
    body = raw.body
    visible = 0 if raw.keypoints is None else int((raw.keypoints[:, 2] > 0).sum())
    has_smpl = body is not None and body.pose is not None
    fittable = has_smpl and visible >= MIN_FIT_JOINTS
    return {
        "has_dp": raw.dense is not None,
        "has_kp2d": raw.keypoints is not None,
        "has_kp3d": body is not None and body.joints3d is not None,
        "has_smpl": has_smpl,
        "has_cam": body is not None and body.cam_K is not None and (body.cam_t is not None or fittable),
        "has_mask": raw.dp_masks is not None or raw.segmentation is not None,
    }


def summarize(spec: DatasetSpec, body: Body) -> tuple[SourceSummary, SampleReader | None]:
    """The summary of one source and its reader (None if it could not be read at all)."""
    files = {k: str(spec.path(v)) for k in ("densepose_json", "smpl_npz", "image_root") if (v := getattr(spec, k))}
    summary = SourceSummary(spec.name, files)
    bad = BadSampleLog("skip")
    try:
        reader = make_reader(spec, bad)
    except DataError as error:
        summary.problems.append(str(error))
        return summary, None
    summary.samples = len(reader)
    summary.persons = len(reader) + sum(bad.counts.values())
    summary.problems += [f"{n} records dropped: {kind}" for kind, n in sorted(bad.counts.items())]
    counts: Counter[str] = Counter()
    images: dict[Path, bool] = {}
    genders = no_camera = 0
    for i in range(len(reader)):
        raw = reader.raw(i)
        has = supervision_of(raw)
        counts.update(k for k, v in has.items() if v)
        no_camera += has["has_smpl"] and not has["has_cam"]
        if raw.image_path not in images:
            images[raw.image_path] = raw.image_path.is_file()
        genders += raw.body is not None and raw.body.gender > 0
    summary.supervision.update(counts)
    missing = [p for p, found in images.items() if not found]
    summary.images = {"found": len(images) - len(missing), "missing": len(missing)}
    if missing:
        summary.problems.append(
            f"{len(missing)} of {len(images)} images missing, e.g. {', '.join(map(str, missing[:EXAMPLES]))}"
            + _doubled_folder_hint(missing[0], Path(files["image_root"]))
        )
    if isinstance(reader, DensePoseCocoReader):
        if reader.dropped_polygons:
            summary.problems.append(f"{reader.dropped_polygons} polygons of < 3 points dropped (as detectron2 does)")
        if reader.join_report is not None:
            report = reader.join_report
            summary.join = {
                "key": report.key, "persons": report.persons, "rows": report.rows, "joined": report.joined,
                "persons_unjoined": report.persons_unjoined, "rows_unjoined": report.rows_unjoined,
                "image_conflicts": report.image_conflicts,
            }
            if report.rows_unjoined or report.image_conflicts:
                summary.problems.append(report.line())
    if no_camera:
        summary.problems.append(
            f"{no_camera} samples with SMPL parameters have no camera and too few keypoints to fit one: "
            "no camera-frame 3D term or rendered IUV for them"
        )
    if genders and not body.extras.get("gendered_model_files"):
        summary.problems.append(f"{genders} samples give a gender; body '{body.name}' has no gendered models: "
                                "their GT meshes are the neutral body's")
    if not len(reader):
        summary.problems.append("no usable sample")
    return summary, reader


def _doubled_folder_hint(path: Path, image_root: Path) -> str:
    """A hint when the image root's last folder is repeated at the start of the file's own path."""
    name = image_root.name
    relative = path.relative_to(image_root) if path.is_relative_to(image_root) else path
    if name and relative.parts and relative.parts[0] == name and (image_root / relative.relative_to(name)).is_file():
        return f" (the file's paths already start with '{name}/': set image_root to its parent, e.g. '.')"
    return ""


# --------------------------------------------------------------------------------------------- grid
def draw_sample(sample: dict, title: str, body_joints=None) -> np.ndarray:
    """(H, W + ..., 3) uint8 BGR picture of one sample with its targets: mask tint, DensePose points
    coloured by part, COCO-17 keypoints (white), projected 3D joints (red) and GT mesh (blue) where the
    sample has a camera, and a caption of the supervision it carries."""
    image = sample["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    canvas = cv2.cvtColor(np.clip(image * 255, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    if bool(sample["has_mask"]):
        tint = canvas.copy()
        tint[sample["mask"].numpy() > 0.5] = (0, 200, 0)
        canvas = cv2.addWeighted(canvas, 0.7, tint, 0.3, 0)
    valid = sample["dp_valid"].numpy()
    for (x, y), part in zip(sample["dp_xy"].numpy()[valid], sample["dp_I"].numpy()[valid], strict=True):
        hue = np.uint8([[[int(part) * 7 % 180, 255, 255]]])
        color = tuple(int(c) for c in cv2.cvtColor(hue, cv2.COLOR_HSV2BGR)[0, 0])
        cv2.circle(canvas, (int(x), int(y)), 1, color, -1)
    if bool(sample["has_cam"]):
        k = sample["cam_K"].double().numpy()
        if body_joints is not None and bool(sample["has_smpl"]):
            verts = body_joints(sample) + sample["cam_t"].double().numpy()
            for u, v in _project(k, verts[::7]):
                cv2.circle(canvas, (int(u), int(v)), 0, (255, 120, 0), -1)
        if bool(sample["has_kp3d"]):
            joints = sample["kp3d"].double().numpy()
            for u, v in _project(k, joints[joints[:, 3] > 0, :3]):
                cv2.drawMarker(canvas, (int(u), int(v)), (0, 0, 255), cv2.MARKER_CROSS, 5)
    if bool(sample["has_kp2d"]):
        for x, y, vis in sample["kp2d"].numpy():
            if vis > 0:
                cv2.circle(canvas, (int(x), int(y)), 2, (255, 255, 255), 1)
    flags = " ".join(k[4:] for k in SUPERVISION if bool(sample[k]))
    caption = np.zeros((28, canvas.shape[1], 3), dtype=np.uint8)
    cv2.putText(caption, title[:24], (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1)
    cv2.putText(caption, flags, (2, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (200, 200, 200), 1)
    return np.vstack([canvas, caption])


def _project(k: np.ndarray, points: np.ndarray) -> np.ndarray:
    front = points[points[:, 2] > 1e-6]
    uvw = front @ k.T
    return uvw[:, :2] / uvw[:, 2:]


class _GtMesh:
    """GT mesh vertices (V, 3) of a sample's SMPL-format parameters, at the origin."""

    def __init__(self, body: Body) -> None:
        from densehmr.body.smpl_layout import make_smplx

        self.model = make_smplx(body.model_file, body.vertex_ids)

    def __call__(self, sample: dict) -> np.ndarray:
        with torch.no_grad():
            out = self.model(betas=sample["betas"][None], body_pose=sample["body_pose"][None],
                             global_orient=sample["global_orient"][None])
        return out.vertices[0].double().numpy()


def write_grid(
    readers: Sequence[tuple[str, SampleReader]], body: Body, path: Path, count: int, image_size: tuple[int, int]
) -> int:
    """Draw up to `count` samples, spread evenly over the readers and their samples, into a PNG at
    `path`; the number drawn (images that cannot be read are passed over)."""
    mesh = _GtMesh(body)
    tiles = []
    usable = [(name, r) for name, r in readers if len(r)]
    for k, (name, reader) in enumerate(usable):
        share = count // len(usable) + (k < count % len(usable))
        dataset = DenseHMRDataset(reader, body, image_size, on_bad_sample="skip")
        for index in np.unique(np.linspace(0, len(reader) - 1, num=min(share, len(reader))).astype(int)):
            sample = dataset[int(index)]
            if not isinstance(sample, Skipped):
                tiles.append(draw_sample(sample, f"{name} #{index}", mesh))
    if not tiles:
        return 0
    rows = [tiles[i : i + GRID_COLUMNS] for i in range(0, len(tiles), GRID_COLUMNS)]
    blank = np.zeros_like(tiles[0])
    grid = np.vstack([np.hstack(row + [blank] * (GRID_COLUMNS - len(row))) for row in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)
    return len(tiles)


# --------------------------------------------------------------------------------------------- CLI
class _Ordered(argparse.Action):
    """Keeps the file options in the order given (they group into sources by position)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.files = [*(getattr(namespace, "files", None) or []), (self.dest, values)]


def specs_from_files(items: Sequence[tuple[str, str]]) -> list[DatasetSpec]:
    """Sources from the file options in order (see the module docstring)."""
    groups: list[dict[str, Any]] = []
    for key, value in items:
        if key == "densepose_json" or (key == "smpl_npz" and not _takes_npz(groups)):
            groups.append({key: value})
        elif key == "smpl_npz":
            groups[-1]["smpl_npz"] = value
        elif not groups:
            raise SystemExit(f"error: --{key.replace('_', '-')} comes before any --densepose-json or --npz")
        else:
            groups[-1][key] = float(value) if key == "box_padding" else value
    specs = []
    for i, g in enumerate(groups):
        name = Path(g.get("densepose_json") or g["smpl_npz"]).stem
        specs.append(DatasetSpec(name=name if len(groups) == 1 else f"{i}:{name}", **{"image_root": ".", **g}))
    return specs


def _takes_npz(groups: list[dict[str, Any]]) -> bool:
    """Whether the latest source is a DensePose set still without its npz."""
    return bool(groups) and "densepose_json" in groups[-1] and "smpl_npz" not in groups[-1]


def specs_from_config(name: str, overrides: Sequence[str], split: str | None) -> tuple[list[DatasetSpec], Body]:
    """The dataset entries of configs/data/<name>.yaml (with `data.`-relative overrides) and its body."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    config_dir = Path(__file__).resolve().parents[1] / "configs"
    full = [o if o.startswith("data.") else f"data.{o}" for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=f"data/{name}", overrides=full)
    module = instantiate(cfg.data)
    splits = [split] if split else ["train", "val", "test"]
    seen, specs = set(), []
    for s in splits:
        for spec in module.specs[s]:
            if spec not in seen:
                seen.add(spec)
                specs.append(spec)
    return specs, module.body


def print_text(summaries: list[SourceSummary], grid: str | None, drawn: int) -> None:
    for s in summaries:
        print(f"== {s.name}")
        for key, value in s.files.items():
            print(f"   {key}: {value}")
        print(f"   samples {s.samples} of {s.persons} person records; images found {s.images['found']}, "
              f"missing {s.images['missing']}")
        if s.join is not None:
            print(f"   joined by {s.join['key']}: {s.join['joined']} persons; unjoined: "
                  f"{s.join['persons_unjoined']} persons, {s.join['rows_unjoined']} rows")
        print("   " + ", ".join(f"{k} {v}" for k, v in s.supervision.items()))
        for problem in s.problems:
            print(f"   problem: {problem}")
    if grid:
        print(f"grid of {drawn} samples: {grid}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.inspect", description=__doc__.split("\n\n")[0])
    for flag, dest in (("--densepose-json", "densepose_json"), ("--npz", "smpl_npz"),
                       ("--image-root", "image_root"), ("--box-padding", "box_padding")):
        parser.add_argument(flag, dest=dest, action=_Ordered, metavar="F")
    parser.add_argument("--config", help="a configs/data/ name; overrides follow as key=value")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. root=/data/h36m")
    parser.add_argument("--split", choices=("train", "val", "test"), help="only this split of the config")
    parser.add_argument("--body", default=None, help="body name (default: the config's, or open)")
    parser.add_argument("--grid", default="inspect.png", help="PNG of drawn samples ('' for none)")
    parser.add_argument("--samples", type=int, default=16, help="samples drawn in the grid")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"), help="crop size")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = parser.parse_args(argv)
    files = getattr(args, "files", None) or []
    if bool(files) == bool(args.config):
        parser.error("give files (--densepose-json / --npz ...) or --config NAME, one of them")
    if args.overrides and not args.config:
        parser.error("overrides need --config")

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    # Libraries print to stdout (smplx's notices); with --json only the summary may go there.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        from densehmr.body import load_body

        if args.config:
            specs, body = specs_from_config(args.config, args.overrides, args.split)
        else:
            specs, body = specs_from_files(files), None
        if args.body or body is None:
            body = load_body(args.body or "open")
        summaries, readers = [], []
        for spec in specs:
            summary, reader = summarize(spec, body)
            summaries.append(summary)
            if reader is not None:
                readers.append((spec.name, reader))
        drawn = 0
        if args.grid:
            drawn = write_grid(readers, body, Path(args.grid), args.samples, tuple(args.size))
    grid = args.grid if drawn else None
    if args.json:
        print(json.dumps({"sources": [vars(s) for s in summaries], "grid": grid, "drawn": drawn}, indent=1))
    else:
        print_text(summaries, grid, drawn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
