"""A two-person photograph for the demo's tests: two synthetic people (the synthetic generator's, cut
out by their masks) standing on a real-looking backdrop. tests/data/backdrop.jpg is a brick wall over
grass made from scikit-image's `brick` and `grass` photographs (both CC0)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic import SyntheticGenerator

DATA = Path(__file__).resolve().parent / "data"
# (centre x, feet y, height) px of each person on the 480 x 320 backdrop.
PLACES = ((150, 300, 220), (340, 290, 200))


def standing_people(body, count: int, size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb (h, w, 3) uint8, mask (h, w) bool) of the first `count` generated images whose main person is
    whole: not cut by the image border, not behind an occluder, at least 60% of the image tall."""
    generator = SyntheticGenerator(body, size, seed=0, split="val")
    people, index = [], 0
    while len(people) < count:
        sample = generator.sample(index)
        index += 1
        mask = sample.maps["owner"] == 0
        rows, cols = np.nonzero(mask)
        if not len(rows) or (mask & sample.maps["occluder"]).any():
            continue
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        if min(x0, y0) < 2 or max(x1, y1) > size - 2 or y1 - y0 < 0.6 * size:
            continue
        people.append((sample.image[y0:y1, x0:x1], mask[y0:y1, x0:x1]))
    return people


def two_people_photo(body, path: Path) -> np.ndarray:
    """Write the photograph to `path` (JPEG) and return the people's true boxes (2, 4) xywh px."""
    photo = cv2.cvtColor(cv2.imread(str(DATA / "backdrop.jpg")), cv2.COLOR_BGR2RGB)
    boxes = []
    for (rgb, mask), (cx, feet, height) in zip(standing_people(body, len(PLACES)), PLACES, strict=True):
        scale = height / rgb.shape[0]
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(mask.astype(np.float32), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = alpha.shape
        x, y = cx - w // 2, feet - h
        region = photo[y : y + h, x : x + w].astype(np.float32)
        photo[y : y + h, x : x + w] = (rgb * alpha[..., None] + region * (1 - alpha[..., None])).round()
        rows, cols = np.nonzero(alpha > 0.5)
        boxes.append([x + cols.min(), y + rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1])
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return np.array(boxes, dtype=np.float64)
