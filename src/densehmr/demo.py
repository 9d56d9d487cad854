"""Run a trained method on your own pictures:
`python -m densehmr.demo IMAGE_OR_FOLDER [--ckpt PATH | --run DIR] [--method m] [--box x,y,w,h] [--out DIR]`.

Per image it writes `<name>.png` (the mesh over the image | the IUV map over the image | the mesh from
its side; methods without a mesh show the IUV map only) and `<name>.json` (camera-frame vertices in
metres, the image camera, the box, COCO-17 keypoints in image px). Without --box the whole image is the
person's box. A file that is not a readable image is refused with one line naming it; the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.crop import compose, invert_affine, scale_affine, warp
from densehmr.inference import (
    ImageError,
    ModelError,
    PersonResult,
    Predictor,
    load_method,
    parse_box,
    read_image,
)
from densehmr.viz.iuv import iuv_to_rgb, side_by_side
from densehmr.viz.mesh_overlay import mesh_overlay, save_png, side_view

DISPLAY_MAX = 640  # px, larger side of each panel: big photos are shown smaller ...
DISPLAY_MIN = 256  # ... and small ones larger
IUV_ALPHA = 0.75
JSON_DECIMALS = 5  # 10 micrometres


def image_files(target: Path) -> list[Path]:
    """`target` itself, or a folder's files whose extension Pillow knows, sorted."""
    if not target.is_dir():
        return [target]
    known = {ext.lower() for ext in Image.registered_extensions()}
    return sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in known)


def display_scale(image_hw: tuple[int, int]) -> float:
    side = max(image_hw)
    return min(max(side, DISPLAY_MIN), DISPLAY_MAX) / side


def screen_vertices(verts: Tensor, k: np.ndarray) -> Tensor:
    """Screen form (V, 3) of camera-frame vertices (V, 3) m under intrinsics k (3, 3): projected px and
    depth relative to the mean, in px at that depth (so the side view keeps the body's proportions)."""
    z = verts[:, 2].clamp(min=1e-6)
    f = torch.tensor([k[0, 0], k[1, 1]], dtype=verts.dtype)
    c = torch.tensor([k[0, 2], k[1, 2]], dtype=verts.dtype)
    xy = verts[:, :2] / z[:, None] * f + c
    mean_z = z.mean()
    return torch.cat([xy, ((z - mean_z) * f[0] / mean_z)[:, None]], dim=-1)


def iuv_over(picture: np.ndarray, result: PersonResult, to_picture: np.ndarray) -> np.ndarray:
    """The crop's IUV map (coloured) put back over picture (h, w, 3) by the crop -> picture affine."""
    h, w = picture.shape[:2]
    colour = warp(iuv_to_rgb(result.iuv), to_picture, (h, w), nearest=True)
    fg = warp((result.iuv[0].numpy() > 0).astype(np.uint8), to_picture, (h, w), nearest=True).astype(bool)
    out = picture.astype(np.float32) * 0.6
    out[fg] = picture[fg] * (1 - IUV_ALPHA) + colour[fg] * IUV_ALPHA
    return out.round().clip(0, 255).astype(np.uint8)


def picture(image: np.ndarray, result: PersonResult, faces: Tensor) -> np.ndarray:
    """mesh over image | IUV over image | side view, at most DISPLAY_MAX px tall/wide."""
    h, w = image.shape[:2]
    s = display_scale((h, w))
    interpolation = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
    shown = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=interpolation)
    size = shown.shape[:2]
    to_shown = compose(scale_affine(s), invert_affine(result.crop.affine))
    panels = []
    if result.verts is not None:
        k = np.diag([s, s, 1.0]) @ result.crop.K_image
        screen = screen_vertices(result.verts, k)
        panels.append(mesh_overlay(shown, screen, faces))
    if result.iuv is not None:
        panels.append(iuv_over(shown, result, to_shown))
    if result.verts is not None:
        panels.append(side_view(screen, faces, size))
    return side_by_side(panels)


def rounded(values) -> list:
    return np.round(np.asarray(values, dtype=np.float64), JSON_DECIMALS).tolist()


def record(path: Path, method: str, ckpt: str, result: PersonResult) -> dict:
    """The JSON written next to the picture."""
    crop = result.crop
    return {
        "image": str(path),
        "method": method,
        "checkpoint": ckpt,
        "box_xywh": rounded(crop.box),
        "camera": {"K": rounded(crop.K_image), "frame": "OpenCV: x right, y down, z forward; metres"},
        "num_vertices": 0 if result.verts is None else int(result.verts.shape[0]),
        "vertices": None if result.verts is None else rounded(result.verts.numpy()),
        "keypoints_coco17": None if result.kp2d is None else rounded(result.kp2d.numpy()),
    }


def output_stem(path: Path) -> str:
    """`person.jpg` -> `person_jpg`: distinct for files that differ only in extension."""
    return f"{path.stem}_{path.suffix.lstrip('.').lower()}" if path.suffix else path.stem


def run_demo(
    target: Path, out: Path, method: str | None = None, ckpt: str | None = None, run: str | None = None,
    box: np.ndarray | None = None, focal: float | None = None, device: str = "cpu",
) -> tuple[list[Path], list[str]]:
    """Write the picture and JSON of each image (box: xywh px, None: the whole image); returns
    (pictures written, one-line refusals)."""
    files = image_files(target)
    if not files:
        raise ImageError(f"{target}: no image files in this folder")
    model, cfg = load_method(run=run, ckpt=ckpt, method=method, device=device)
    name = cfg.method.name if cfg is not None else method
    predictor = Predictor(model, focal=focal)
    faces = model.body.faces
    written, refused = [], []
    for path in files:
        try:
            image = read_image(path)
        except ImageError as err:
            refused.append(str(err))
            continue
        result = predictor(image, [box])[0]
        stem = output_stem(path)
        written.append(save_png(out / f"{stem}.png", picture(image, result, faces)))
        payload = record(path, name, str(ckpt or run or ""), result)
        (out / f"{stem}.json").write_text(json.dumps(payload) + "\n")
    return written, refused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="an image file or a folder of images")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="a checkpoint (.ckpt); its run folder's config.yaml is used if there")
    source.add_argument("--run", help="a run folder (runs/<method>/<id>); its last checkpoint")
    parser.add_argument("--method", default=None, help="meshpose | pymaf | dct | densereg (default: the run's)")
    parser.add_argument("--box", default=None, help="person box x,y,w,h in image px (default: the whole image)")
    parser.add_argument("--focal", type=float, default=None, help="image focal length px (default: larger side)")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.ckpt is None and args.run is None and args.method is None:
        args.method = "meshpose"
    try:
        box = parse_box(args.box)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        written, refused = run_demo(
            args.image, args.out, method=args.method, ckpt=args.ckpt, run=args.run, box=box,
            focal=args.focal, device=args.device,
        )
    except (ImageError, ModelError) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    for line in refused:
        print(f"error: {line}", file=sys.stderr)
    for path in written:
        print(path)
    return 2 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
