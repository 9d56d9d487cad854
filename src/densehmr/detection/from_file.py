"""Boxes from a detections file: what researchers have from their own detector, in COCO's format.

Two layouts are read:
- a COCO results list, `[{"image_id": ..., "category_id": 1, "bbox": [x, y, w, h], "score": s}, ...]`;
  `image_id` is a file name (matched against the image's path relative to the demo's folder, then its
  bare name) or a number (matched against the integer of the file's stem, as COCO's 000000397133.jpg is
  image 397133);
- a COCO dataset dict, `{"images": [{"id", "file_name"}], "annotations": [...], "categories": [...]}`,
  whose ids go through its images list; an annotation without a score counts as 1.

Only people are kept: `category_id` equal to the category named "person" in `categories`, else 1
(COCO's person); records without a category_id are taken as people.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from densehmr.detection.boxes import COCO_PERSON, Detections

DEFAULT_SCORE_THRESHOLD = 0.5  # on the file's scores, usually a detector's probability


class DetectionsFileError(ValueError):
    """A detections file that cannot be used; the message is one line naming the file and the record."""


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key(image_id) -> str | int | None:
    if isinstance(image_id, str):
        return image_id
    if isinstance(image_id, int) and not isinstance(image_id, bool):
        return image_id
    return None


class BoxesFile:
    """The boxes a COCO-format detections file gives each image (see the module's doc)."""

    name = "boxes file"
    default_score_threshold = DEFAULT_SCORE_THRESHOLD

    def __init__(self, path: str | Path, root: str | Path | None = None) -> None:
        """root: the folder the demo's images are named relative to (default: none, bare names)."""
        self.path = Path(path)
        self.root = Path(root) if root is not None else None
        self.by_image: dict[str | int, list[tuple[np.ndarray, float]]] = defaultdict(list)
        self._read()

    def describe(self) -> str:
        return f"boxes from {self.path}"

    def _fail(self, where: str, message: str) -> DetectionsFileError:
        return DetectionsFileError(f"{self.path}: {where}: {message}")

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError as exc:
            raise DetectionsFileError(f"{self.path}: no such detections file") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DetectionsFileError(f"{self.path}: not a JSON file ({str(exc).splitlines()[0]})") from exc
        names: dict[int | str, str] = {}
        person = COCO_PERSON
        if isinstance(data, dict):
            if not isinstance(data.get("annotations"), list):
                raise self._fail("top level", "a COCO dict needs an 'annotations' list")
            for i, image in enumerate(data.get("images") or []):
                if not isinstance(image, dict) or _key(image.get("id")) is None or not isinstance(
                    image.get("file_name"), str
                ):
                    raise self._fail(f"images[{i}]", "needs an 'id' and a 'file_name'")
                names[image["id"]] = image["file_name"]
            for category in data.get("categories") or []:
                if isinstance(category, dict) and category.get("name") == "person":
                    person = category.get("id")
            records, label = data["annotations"], "annotations"
        elif isinstance(data, list):
            records, label = data, "detection"
        else:
            raise self._fail("top level", "expected a list of detections or a COCO dict")
        for i, record in enumerate(records):
            self._add(i, record, label, names, person, scored=label == "detection")

    def _add(self, i: int, record, label: str, names: dict, person, scored: bool) -> None:
        where = f"{label}[{i}]"
        if not isinstance(record, dict):
            raise self._fail(where, "not an object")
        key = _key(record.get("image_id"))
        if key is None:
            got = record.get("image_id")
            raise self._fail(where, f"field 'image_id' must be a file name or an integer, got {got!r}")
        if "category_id" in record and record["category_id"] != person:
            return
        bbox = record.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise self._fail(where, f"field 'bbox' must be [x, y, w, h] numbers, got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise self._fail(where, f"field 'bbox' must have w, h > 0, got {bbox!r}")
        score = record.get("score", None if scored else 1.0)
        if not _number(score):
            raise self._fail(where, f"field 'score' must be a number, got {score!r}")
        found = (np.array(bbox, dtype=np.float64), float(score))
        name = names.get(key, key)
        self.by_image[name].append(found)
        if isinstance(name, str) and Path(name).name != name:  # a dataset's "train2014/x.jpg" is also "x.jpg"
            self.by_image[Path(name).name].append(found)

    def keys_of(self, path: Path) -> list[str | int]:
        """The ids an image file may have in the file, most specific first."""
        path = Path(path)
        keys: list[str | int] = []
        if self.root is not None and self.root.is_dir():
            try:
                keys.append(path.resolve().relative_to(self.root.resolve()).as_posix())
            except ValueError:
                pass
        keys.append(path.name)
        if path.stem.isdigit():
            keys.append(int(path.stem))
        return keys

    def __call__(self, image: np.ndarray, path: Path) -> Detections:
        """The file's boxes for the image at `path` (none when the file does not name it)."""
        for key in self.keys_of(path):
            if key in self.by_image:
                boxes, scores = zip(*self.by_image[key], strict=True)
                return Detections(np.stack(boxes), np.array(scores))
        return Detections(np.zeros((0, 4)), np.zeros(0))
