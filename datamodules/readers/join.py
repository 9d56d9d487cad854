"""Which npz row belongs to which DensePose-COCO person: by identity, never by position.

With annotation ids in the npz (`ann_id`, or EFT's `annotIds`) a row joins the person with that id,
provided their image names agree. Without them (SPIN's and PyMAF's files) a row joins the person of
the same image whose box agrees with the row's: box centres within CENTRE_TOLERANCE of the person box's
longer side, and the row's box side (scale * 200 / box_padding) within SIZE_TOLERANCE of it. Both
files take their boxes from the same COCO annotation (SPIN: centre = box centre, scale = 1.2 x longer
side / 200), so true pairs agree to rounding and the tolerances only absorb that; each row and each
person joins at most once, the closest centres first. Rows and persons that join nothing are counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from datamodules.readers.spin_npz import SpinNpz

CENTRE_TOLERANCE = 0.05
SIZE_TOLERANCE = 0.10


@dataclass(frozen=True)
class JoinReport:
    """How one DensePose set and one npz joined. rows: the npz's valid rows."""

    npz: str
    key: str
    persons: int
    rows: int
    joined: int
    image_conflicts: int = 0

    @property
    def persons_unjoined(self) -> int:
        return self.persons - self.joined

    @property
    def rows_unjoined(self) -> int:
        return self.rows - self.joined

    def line(self) -> str:
        conflicts = f", {self.image_conflicts} ids naming another image" if self.image_conflicts else ""
        return (
            f"{self.npz} joined by {self.key}: {self.joined} of {self.persons} persons, "
            f"{self.rows_unjoined} of {self.rows} rows unjoined{conflicts}"
        )


def same_image(a: str, b: str) -> bool:
    """Whether two image paths name the same file: one is the other with leading folders (an npz's
    `train2014/COCO_train2014_x.jpg` against a DensePose file_name `COCO_train2014_x.jpg`)."""
    pa, pb = PurePosixPath(a.replace("\\", "/")).parts, PurePosixPath(b.replace("\\", "/")).parts
    k = min(len(pa), len(pb))
    return k > 0 and pa[-k:] == pb[-k:]


def join_rows(
    ann_ids: np.ndarray,
    image_names: list[str],
    boxes: np.ndarray,
    table: SpinNpz,
    box_padding: float,
) -> tuple[np.ndarray, JoinReport]:
    """The npz row (-1: none) of each person (ann_ids (M,), image_names (M,), boxes (M, 4) xywh px),
    and the report. Invalid rows are not joined by box; a person whose id names an invalid row gets
    -2 (its row's error is already reported)."""
    valid_rows = int(table.valid.sum())
    if table.ann_ids is not None:
        return _by_id(ann_ids, image_names, table, valid_rows)
    rows = _by_box(image_names, boxes, table, box_padding)
    joined = int((rows >= 0).sum())
    return rows, JoinReport(str(table.path), "image name + box", len(ann_ids), valid_rows, joined)


def _by_id(
    ann_ids: np.ndarray, image_names: list[str], table: SpinNpz, valid_rows: int
) -> tuple[np.ndarray, JoinReport]:
    row_of = {int(a): r for r, a in enumerate(table.ann_ids)}
    rows = np.full(len(ann_ids), -1, dtype=np.int64)
    conflicts = 0
    for i, ann in enumerate(ann_ids):
        row = row_of.get(int(ann), -1)
        if row < 0:
            continue
        if not table.valid[row]:
            rows[i] = -2
        elif same_image(table.image_name(row), image_names[i]):
            rows[i] = row
        else:
            conflicts += 1
    joined = int((rows >= 0).sum())
    return rows, JoinReport(str(table.path), "annotation id", len(ann_ids), valid_rows, joined, conflicts)


def _by_box(image_names: list[str], boxes: np.ndarray, table: SpinNpz, box_padding: float) -> np.ndarray:
    persons_of: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(image_names):
        persons_of[PurePosixPath(name.replace("\\", "/")).name].append(i)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    side = boxes[:, 2:].max(1)
    pairs = []  # (centre distance / side, row, person)
    for row in np.flatnonzero(table.valid):
        name = table.image_name(row)
        candidates = [i for i in persons_of.get(PurePosixPath(name.replace("\\", "/")).name, ()) if
                      same_image(name, image_names[i])]
        if not candidates:
            continue
        idx = np.asarray(candidates)
        dist = np.linalg.norm(centre[idx] - table.arrays["center"][row], axis=1) / side[idx]
        size = float(table.arrays["scale"][row]) * 200.0 / box_padding / side[idx]
        ok = (dist <= CENTRE_TOLERANCE) & (np.abs(size - 1.0) <= SIZE_TOLERANCE)
        pairs += [(float(d), int(row), int(i)) for d, i in zip(dist[ok], idx[ok], strict=True)]
    rows = np.full(len(image_names), -1, dtype=np.int64)
    used: set[int] = set()
    for _, row, person in sorted(pairs):
        if rows[person] < 0 and row not in used:
            rows[person] = row
            used.add(row)
    return rows
