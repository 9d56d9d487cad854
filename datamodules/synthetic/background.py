"""Procedural backgrounds (wall and floor, clutter, noise) and occluders, drawn with OpenCV.

Images are (H, W, 3) uint8 RGB. Everything is drawn from the generator's random stream, so the same
stream gives the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


def _colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """(size, size, channels) float32 in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels)


def _gradient(size: int, a: np.ndarray, b: np.ndarray, angle: float) -> np.ndarray:
    """(size, size, 3) float32 linear ramp from colour a to colour b along direction `angle`."""
    # A linear ramp survives bilinear upsampling, so it is computed on a coarse grid.
    coarse = 16
    t = np.linspace(-1.0, 1.0, coarse, dtype=np.float32)
    along = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]
    w = ((along - along.min()) / max(float(np.ptp(along)), 1e-6))[..., None]
    ramp = (a * (1 - w) + b * w).astype(np.float32)
    return cv2.resize(ramp, (size, size), interpolation=cv2.INTER_LINEAR)


def _draw_shape(rng: np.random.Generator, canvas: np.ndarray, size: int) -> None:
    colour = _colour(rng)
    kind = rng.integers(5)
    centre = rng.integers(-size // 8, size + size // 8, 2)
    extent = max(2, int(size * rng.uniform(0.03, 0.35)))
    if kind == 0:
        corner = centre + rng.integers(extent // 3 + 1, extent + 2, 2)
        cv2.rectangle(canvas, tuple(int(c) for c in centre), tuple(int(c) for c in corner), colour, -1)
    elif kind == 1:
        cv2.circle(canvas, tuple(int(c) for c in centre), extent // 2 + 1, colour, -1, cv2.LINE_AA)
    elif kind == 2:
        axes = (extent // 2 + 1, int(extent * rng.uniform(0.1, 0.6)) + 1)
        cv2.ellipse(
            canvas,
            tuple(int(c) for c in centre),
            axes,
            float(rng.uniform(0, 180)),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
    elif kind == 3:
        pts = centre + rng.integers(-extent, extent + 1, (int(rng.integers(3, 7)), 2))
        cv2.fillPoly(canvas, [pts.astype(np.int32)], colour, cv2.LINE_AA)
    else:
        pts = centre + rng.integers(-extent, extent + 1, (int(rng.integers(2, 6)), 2))
        cv2.polylines(canvas, [pts.astype(np.int32)], False, colour, int(rng.integers(1, 4)), cv2.LINE_AA)


def background(rng: np.random.Generator, size: int, horizon_row: float) -> np.ndarray:
    """(size, size, 3) uint8: a wall and a floor meeting below the horizon, clutter, colour noise."""
    wall = _gradient(
        size,
        np.array(_colour(rng, 40, 230), np.float32),
        np.array(_colour(rng, 40, 230), np.float32),
        rng.uniform(0, 2 * np.pi),
    )
    floor = _gradient(
        size,
        np.array(_colour(rng, 30, 200), np.float32),
        np.array(_colour(rng, 30, 200), np.float32),
        np.pi / 2,
    )
    junction = int(np.clip(horizon_row + rng.uniform(0.05, 0.4) * size, 0, size))
    floor = np.ascontiguousarray(floor.astype(np.uint8))
    if rng.random() < 0.6:
        # Floor boards or tiles: lines from a vanishing point on the horizon.
        vanish = (int(rng.uniform(0.2, 0.8) * size), int(np.clip(horizon_row, -4 * size, 4 * size)))
        line = _colour(rng, 20, 200)
        for x in np.linspace(-2 * size, 3 * size, int(rng.integers(4, 14))):
            cv2.line(floor, vanish, (int(x), 4 * size), line, 1, cv2.LINE_AA)
    canvas = np.ascontiguousarray(wall.astype(np.uint8))
    canvas[junction:] = floor[junction:]
    for _ in range(int(rng.integers(4, 18))):
        _draw_shape(rng, canvas, size)
    out = canvas.astype(np.float32)
    out *= 1.0 + 0.12 * _smooth_noise(rng, size, int(rng.integers(3, 9)), 3)
    out += rng.normal(0.0, rng.uniform(1.0, 5.0), out.shape).astype(np.float32)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.8, 2.5)
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    return np.clip(out, 0, 255).astype(np.uint8)


def occluders(
    rng: np.random.Generator, size: int, box: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Random polygons and bars in front of the people, around `box` (xywh of the main person).

    Returns the occluders' colours (size, size, 3) uint8 and their mask (size, size) bool (all False
    when none were drawn).
    """
    colours = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    if box is None or rng.random() > 0.4:
        return colours, mask.astype(bool)
    x, y, w, h = box
    scale = max(w, h)
    for _ in range(int(rng.integers(1, 3))):
        layer = np.zeros((size, size), np.uint8)
        centre = np.array([x + rng.uniform(-0.1, 1.1) * w, y + rng.uniform(0.0, 1.1) * h])
        if rng.random() < 0.3:
            # A bar (pole, table edge, railing) across the person.
            angle = rng.uniform(0, np.pi)
            half = np.array([np.cos(angle), np.sin(angle)]) * size * 2.0
            thick = max(2, int(scale * rng.uniform(0.05, 0.2)))
            cv2.line(
                layer, tuple(int(c) for c in centre - half), tuple(int(c) for c in centre + half), 1, thick
            )
        else:
            n = int(rng.integers(3, 10))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = scale * rng.uniform(0.08, 0.3) * rng.uniform(0.5, 1.0, n)
            pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
            cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 1)
        fill = _gradient(
            size,
            np.array(_colour(rng), np.float32),
            np.array(_colour(rng), np.float32),
            rng.uniform(0, 2 * np.pi),
        )
        fill *= 1.0 + 0.2 * _smooth_noise(rng, size, int(rng.integers(4, 16)), 1)
        on = layer > 0
        colours[on] = np.clip(fill[on], 0, 255).astype(np.uint8)
        mask |= layer
    return colours, mask.astype(bool)
