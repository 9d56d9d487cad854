"""A picture of synthetic samples: `python -m datamodules.synthetic.grid` (results/data/synthetic_grid.png).

Each tile pairs the image, with its boxes, dense points (coloured by part) and keypoints (green
visible, orange occluded) drawn from the annotation records, and its rendered IUV (part colours with
U and V iso-lines every 0.1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic.generator import SyntheticGenerator, SyntheticSample
from datamodules.synthetic.writer import COCO_SKELETON
from densehmr.files import atomic_write_bytes


def part_palette() -> np.ndarray:
    """(25, 3) uint8 distinct colours for background + 24 parts."""
    hues = (np.arange(24) * 7 % 24) / 24.0
    k = (np.array([5.0, 3.0, 1.0]) + hues[:, None] * 6.0) % 6.0
    rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.vstack([[0, 0, 0], np.round(rgb * 255)]).astype(np.uint8)


def draw_iuv(part: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: part colours, darkened along U and V iso-lines (every 0.1)."""
    out = part_palette()[part].astype(np.float32)
    line = np.zeros(part.shape, bool)
    for chan in (u, v):
        band = np.floor(chan * 10.0)
        line[:, 1:] |= band[:, 1:] != band[:, :-1]
        line[1:, :] |= band[1:, :] != band[:-1, :]
    out[line & (part > 0)] *= 0.35
    return out.astype(np.uint8)


def draw_annotations(image: np.ndarray, annotations: list[dict]) -> np.ndarray:
    """The image with boxes, dense points (box coordinates mapped back like the readers do) and keypoints."""
    out = np.ascontiguousarray(image.copy())
    palette = part_palette()
    for a in annotations:
        x, y, w, h = a["bbox"]
        dense = "dp_I" in a
        cv2.rectangle(
            out,
            (int(x), int(y)),
            (int(x + w) - 1, int(y + h) - 1),
            (255, 255, 255) if dense else (128, 128, 128),
            1,
        )
        if dense:
            px = x + np.asarray(a["dp_x"]) / 256.0 * w
            py = y + np.asarray(a["dp_y"]) / 256.0 * h
            for cx, cy, p in zip(px, py, a["dp_I"], strict=True):
                cv2.circle(out, (int(cx), int(cy)), 1, tuple(int(c) for c in palette[p]), -1)
        kp = np.asarray(a["keypoints"]).reshape(17, 3)
        for i, j in COCO_SKELETON:
            if kp[i - 1, 2] > 0 and kp[j - 1, 2] > 0:
                cv2.line(
                    out,
                    tuple(int(c) for c in kp[i - 1, :2]),
                    tuple(int(c) for c in kp[j - 1, :2]),
                    (0, 200, 255),
                    1,
                    cv2.LINE_AA,
                )
        for xk, yk, vk in kp:
            if vk > 0:
                cv2.circle(
                    out, (int(xk), int(yk)), 2, (0, 230, 0) if vk == 2 else (255, 140, 0), -1, cv2.LINE_AA
                )
    return out


def tile(sample: SyntheticSample) -> np.ndarray:
    """(S, 2S, 3) uint8: annotated image | IUV."""
    m = sample.maps
    return np.concatenate(
        [draw_annotations(sample.image, sample.annotations), draw_iuv(m["I"], m["U"], m["V"])], 1
    )


def grid(samples: list[SyntheticSample], columns: int = 4) -> np.ndarray:
    """Tiles in rows of `columns`, separated by a 4 px border."""
    tiles = [np.pad(tile(s), ((2, 2), (2, 2), (0, 0)), constant_values=255) for s in samples]
    rows = [np.concatenate(tiles[r : r + columns], 1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datamodules.synthetic.grid", description=__doc__)
    parser.add_argument("--out", default="results/data/synthetic_grid.png")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first image index")
    args = parser.parse_args(argv)
    from densehmr.body import load_body

    generator = SyntheticGenerator(load_body("open"), args.size, args.seed, args.split)
    picture = grid([generator.sample(i) for i in range(args.start, args.start + 16)])
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(Path(args.out), png.tobytes())
    print(args.out)


if __name__ == "__main__":
    main()
