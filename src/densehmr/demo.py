"""Run a trained method on the people in your own pictures:
`python -m densehmr.demo IMAGE_OR_FOLDER [--ckpt PATH | --run DIR] [--method m] [--boxes FILE | --detector D]`.

Per image it finds the people (a COCO detections file given with --boxes, else --detector: OpenCV's
built-in people detector `hog`, `whole` for the whole image as one person, or your own ONNX detector;
then a score threshold, a minimum size and non-maximum suppression; --box x,y,w,h names one person
instead), runs the method on each and writes `<name>.png` (every mesh over the image with the boxes |
the IUV maps over the image | the meshes from the side; methods without a mesh show the IUV maps only;
under them, what the model is: checkpoint, method, training data and validation metrics) and
`<name>.json` (the model card, the detector, the image camera, and one record per person: box, score,
camera-frame vertices in metres, COCO-17 keypoints in image px). An image with nobody found gets one
line saying so; a file that is not a readable image is refused with one line naming it; the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from datamodules.crop import compose, invert_affine, scale_affine, warp
from densehmr.detection import Detections, Detector, build_detector, select_people
from densehmr.detection.boxes import MIN_SIZE_PX, NMS_IOU
from densehmr.detection.choose import DEFAULT_DETECTOR
from densehmr.detection.from_file import DetectionsFileError
from densehmr.detection.onnx import DetectorModelError
from densehmr.inference import (
    ImageError,
    ModelError,
    PersonResult,
    Predictor,
    find_checkpoint,
    load_method,
    parse_box,
    read_image,
)
from densehmr.methods.registry import method_names
from densehmr.model_card import ModelCard, model_card
from densehmr.viz.iuv import iuv_to_rgb, side_by_side
from densehmr.viz.mesh_overlay import mesh_overlay, save_png, side_view

DISPLAY_MAX = 640  # px, larger side of each panel: big photos are shown smaller ...
DISPLAY_MIN = 256  # ... and small ones larger
IUV_ALPHA = 0.75
JSON_DECIMALS = 5  # 10 micrometres
BOX_COLOUR = (255, 200, 0)
CAPTION_FONT_PX = 13
CAPTION_MARGIN = 6
WARNING_COLOUR = (170, 0, 0)


@dataclass(frozen=True)
class PeopleFinder:
    """A detector and the selection applied to what it finds (score threshold, NMS IoU, min size px)."""

    detector: Detector
    score_threshold: float
    nms_iou: float = NMS_IOU
    min_size: float = MIN_SIZE_PX

    def __call__(self, image: np.ndarray, path: Path) -> Detections:
        return select_people(self.detector(image, path), self.score_threshold, self.nms_iou, self.min_size)

    def describe(self) -> str:
        return (f"{self.detector.describe()}, score >= {self.score_threshold:g}, longer side >= "
                f"{self.min_size:g} px, NMS IoU {self.nms_iou:g}")

    def to_json(self) -> dict:
        return {"name": self.detector.name, "description": self.detector.describe(),
                "score_threshold": self.score_threshold, "nms_iou": self.nms_iou, "min_size_px": self.min_size}


def image_files(target: Path) -> list[Path]:
    """`target` itself, or a folder's files whose extension Pillow knows, sorted."""
    if not target.is_dir():
        return [target]
    known = {ext.lower() for ext in Image.registered_extensions()}
    return sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in known)


def display_scale(image_hw: tuple[int, int]) -> float:
    side = max(image_hw)
    return min(max(side, DISPLAY_MIN), DISPLAY_MAX) / side


def screen_vertices(verts: Tensor, k: np.ndarray, depth: float | None = None) -> Tensor:
    """Screen form (V, 3) of camera-frame vertices (V, 3) m under intrinsics k (3, 3): projected px and
    depth relative to `depth` m (default their mean), in px at that depth (so the side view keeps the
    body's proportions, and several people drawn with one `depth` keep their distances)."""
    z = verts[:, 2].clamp(min=1e-6)
    f = torch.tensor([k[0, 0], k[1, 1]], dtype=verts.dtype)
    c = torch.tensor([k[0, 2], k[1, 2]], dtype=verts.dtype)
    xy = verts[:, :2] / z[:, None] * f + c
    ref = z.mean() if depth is None else torch.tensor(depth, dtype=verts.dtype)
    return torch.cat([xy, ((z - ref) * f[0] / ref)[:, None]], dim=-1)


def far_to_near(results: list[PersonResult]) -> list[int]:
    """Drawing order: the farthest person first (mean vertex depth; without a mesh, smaller boxes first)."""
    if all(r.verts is not None for r in results):
        return sorted(range(len(results)), key=lambda i: -float(results[i].verts[:, 2].mean()))
    return sorted(range(len(results)), key=lambda i: float(np.prod(results[i].crop.box[2:])))


def iuv_over(picture: np.ndarray, results: list[PersonResult], to_picture: list[np.ndarray]) -> np.ndarray:
    """Every person's crop IUV map (coloured) put back over picture (h, w, 3) by its crop -> picture
    affine, nearer people over farther ones; the rest of the picture darkened."""
    h, w = picture.shape[:2]
    colour = np.zeros((h, w, 3), dtype=np.uint8)
    fg = np.zeros((h, w), dtype=bool)
    for i in far_to_near(results):
        if results[i].iuv is None:
            continue
        mine = warp((results[i].iuv[0].numpy() > 0).astype(np.uint8), to_picture[i], (h, w), nearest=True) > 0
        colour[mine] = warp(iuv_to_rgb(results[i].iuv), to_picture[i], (h, w), nearest=True)[mine]
        fg |= mine
    out = picture.astype(np.float32) * 0.6
    out[fg] = picture[fg] * (1 - IUV_ALPHA) + colour[fg] * IUV_ALPHA
    return out.round().clip(0, 255).astype(np.uint8)


def draw_boxes(picture: np.ndarray, boxes: list[np.ndarray], scale: float) -> np.ndarray:
    """The people's boxes (xywh image px, shown at `scale`) numbered 1..N as in the JSON."""
    img = Image.fromarray(picture)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    for n, box in enumerate(boxes, start=1):
        x, y, w, h = (float(v) * scale for v in box)
        draw.rectangle([x, y, x + w, y + h], outline=BOX_COLOUR, width=2)
        draw.text((x + 3, y + 2), str(n), fill=BOX_COLOUR, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(img)


def wrap(text: str, width: float, font: ImageFont.FreeTypeFont) -> list[str]:
    """`text` broken at spaces into lines at most `width` px wide (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def caption(lines: list[tuple[str, tuple[int, int, int]]], width: int) -> np.ndarray:
    """A white strip (H, width, 3) with the (text, colour) lines, wrapped to its width."""
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    wrapped = [(part, colour) for text, colour in lines for part in wrap(text, width - 2 * CAPTION_MARGIN, font)]
    step = CAPTION_FONT_PX + 4
    img = Image.new("RGB", (width, 2 * CAPTION_MARGIN + step * len(wrapped)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for row, (text, colour) in enumerate(wrapped):
        draw.text((CAPTION_MARGIN, CAPTION_MARGIN + row * step), text, fill=colour, font=font)
    return np.asarray(img)


def caption_lines(card: ModelCard, finder: str, found: int) -> list[tuple[str, tuple[int, int, int]]]:
    first, data, metrics = card.lines()
    people = f"{found} {'person' if found == 1 else 'people'}: {finder}"
    return [(first, (0, 0, 0)), (data, WARNING_COLOUR if card.training_data != "real" else (0, 0, 0)),
            (metrics, (0, 0, 0)), (people, (0, 0, 0))]


def picture(image: np.ndarray, results: PersonResult | list[PersonResult], faces: Tensor) -> np.ndarray:
    """meshes over image (with the numbered boxes) | IUV over image | side view, each panel at most
    DISPLAY_MAX px tall/wide, of one person or several."""
    results = [results] if isinstance(results, PersonResult) else results
    h, w = image.shape[:2]
    s = display_scale((h, w))
    interpolation = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
    shown = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=interpolation)
    size = shown.shape[:2]
    panels = []
    meshes = all(r.verts is not None for r in results)
    if meshes:
        k = np.diag([s, s, 1.0]) @ results[0].crop.K_image
        depth = float(torch.cat([r.verts[:, 2] for r in results]).clamp(min=1e-6).mean())
        screen = torch.cat([screen_vertices(r.verts, k, depth) for r in results])
        count = results[0].verts.shape[0]
        every = torch.cat([faces + i * count for i in range(len(results))])
        panels.append(mesh_overlay(shown, screen, every))
    if any(r.iuv is not None for r in results):
        to_shown = [compose(scale_affine(s), invert_affine(r.crop.affine)) for r in results]
        panels.append(iuv_over(shown, results, to_shown))
    panels[0] = draw_boxes(panels[0], [r.crop.box for r in results], s)
    if meshes:
        panels.append(side_view(screen, every, size))
    return side_by_side(panels)


def rounded(values) -> list:
    return np.round(np.asarray(values, dtype=np.float64), JSON_DECIMALS).tolist()


def person_record(result: PersonResult, score: float | None) -> dict:
    """One person's JSON record."""
    return {
        "box_xywh": rounded(result.crop.box),
        "score": None if score is None else round(float(score), JSON_DECIMALS),
        "num_vertices": 0 if result.verts is None else int(result.verts.shape[0]),
        "vertices": None if result.verts is None else rounded(result.verts.numpy()),
        "keypoints_coco17": None if result.kp2d is None else rounded(result.kp2d.numpy()),
    }


def record(path: Path, card: ModelCard, finder: dict, results: list[PersonResult],
           scores: list[float | None]) -> dict:
    """The JSON written next to the picture: what the model is, how people were found, and one record
    per person (numbered as in the picture)."""
    return {
        "image": str(path),
        "method": card.method,
        "checkpoint": card.checkpoint,
        "model": card.to_json(),
        "detector": finder,
        "camera": {"K": rounded(results[0].crop.K_image), "frame": "OpenCV: x right, y down, z forward; metres"},
        "people": [person_record(r, s) for r, s in zip(results, scores, strict=True)],
    }


def output_stem(path: Path) -> str:
    """`person.jpg` -> `person_jpg`: distinct for files that differ only in extension."""
    return f"{path.stem}_{path.suffix.lstrip('.').lower()}" if path.suffix else path.stem


def checkpoint_of(ckpt: str | None, run: str | None, method: str | None) -> Path:
    """The checkpoint file load_method reads for these arguments."""
    if ckpt is not None:
        return Path(ckpt)
    return find_checkpoint(Path(run) if run is not None else Path("runs") / str(method) / "latest")


@dataclass
class DemoResult:
    """written: pictures; refused: one-line refusals of unreadable images; nobody: one line per image
    where no person was found."""

    written: list[Path]
    refused: list[str]
    nobody: list[str]


def run_demo(
    target: Path, out: Path, method: str | None = None, ckpt: str | None = None, run: str | None = None,
    box: np.ndarray | None = None, focal: float | None = None, device: str = "cpu",
    finder: PeopleFinder | None = None,
) -> DemoResult:
    """Write the picture and JSON of each image: the people `finder` selects (default: the built-in
    detector), or the one person in `box` (xywh px) when given."""
    files = image_files(target)
    if not files:
        raise ImageError(f"{target}: no image files in this folder")
    model, cfg = load_method(run=run, ckpt=ckpt, method=method, device=device)
    name = cfg.method.name if cfg is not None else method
    card = model_card(checkpoint_of(ckpt, run, name), name, cfg)
    if finder is None:
        detector = build_detector(DEFAULT_DETECTOR)
        finder = PeopleFinder(detector, detector.default_score_threshold)
    how = {"name": "box", "description": "the box given"} if box is not None else finder.to_json()
    how_text = how["description"] if box is not None else finder.describe()
    predictor = Predictor(model, focal=focal)
    faces = model.body.faces
    done = DemoResult([], [], [])
    for path in files:
        try:
            image = read_image(path)
        except ImageError as err:
            done.refused.append(str(err))
            continue
        if box is not None:
            boxes, scores = [box], [None]
        else:
            found = finder(image, path)
            if not len(found):
                done.nobody.append(f"{path}: no person found ({finder.describe()}); "
                                   "name one with --box x,y,w,h, give --boxes FILE or try --detector whole")
                continue
            boxes, scores = list(found.boxes), found.scores.tolist()
        results = predictor(image, boxes)
        stem = output_stem(path)
        drawn = picture(image, results, faces)
        strip = caption(caption_lines(card, how_text, len(results)), drawn.shape[1])
        done.written.append(save_png(out / f"{stem}.png", np.concatenate([drawn, strip], axis=0)))
        (out / f"{stem}.json").write_text(json.dumps(record(path, card, how, results, scores)) + "\n")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="an image file or a folder of images")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="a checkpoint (.ckpt); its run folder's config.yaml is used if there")
    source.add_argument("--run", help="a run folder (runs/<method>/<id>); its last checkpoint")
    parser.add_argument("--method", default=None, choices=method_names(),
                        help="one of the configured methods (default: the run's; meshpose without a run)")
    people = parser.add_mutually_exclusive_group()
    people.add_argument("--box", default=None, help="one person's box x,y,w,h in image px (no detection)")
    people.add_argument("--boxes", default=None, help="COCO-format detections JSON (see densehmr.detection.from_file)")
    people.add_argument("--detector", default=DEFAULT_DETECTOR,
                        help="hog (OpenCV's people detector) | whole (the whole image) | an .onnx detector "
                             "(contract: densehmr.detection.onnx)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="keep detections scoring at least this (default: the detector's own)")
    parser.add_argument("--nms-iou", type=float, default=NMS_IOU, help="non-maximum suppression IoU")
    parser.add_argument("--min-size", type=float, default=MIN_SIZE_PX, help="smallest box's longer side, px")
    parser.add_argument("--focal", type=float, default=None, help="image focal length px (default: larger side)")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.ckpt is None and args.run is None and args.method is None:
        args.method = "meshpose"
    try:
        box = parse_box(args.box)
        root = args.image if args.image.is_dir() else args.image.parent
        detector = build_detector(args.detector, boxes=args.boxes, root=root)
    except (ValueError, DetectionsFileError, DetectorModelError) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    threshold = detector.default_score_threshold if args.score_threshold is None else args.score_threshold
    finder = PeopleFinder(detector, threshold, args.nms_iou, args.min_size)
    try:
        done = run_demo(
            args.image, args.out, method=args.method, ckpt=args.ckpt, run=args.run, box=box,
            focal=args.focal, device=args.device, finder=finder,
        )
    except (ImageError, ModelError, DetectorModelError) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    for line in done.refused:
        print(f"error: {line}", file=sys.stderr)
    for line in done.nobody:
        print(line, file=sys.stderr)
    for path in done.written:
        print(path)
    return 2 if done.refused else 0


if __name__ == "__main__":
    sys.exit(main())
