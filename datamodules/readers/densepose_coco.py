"""DensePose-COCO JSON (`densepose_coco_2014_*.json`), validated once at load time.

Per person annotation: id, image_id, category_id, bbox [x, y, w, h], optional area, iscrowd, segmentation
(polygons or RLE), keypoints (17 x (x, y, v)), and the DensePose fields dp_x, dp_y (0..256 of the box),
dp_I (1..24), dp_U, dp_V ([0, 1]) and dp_masks (14 RLEs at 256x256 over the box, [] when empty).
Crowd and non-person annotations are left out. Polygons of fewer than 3 points are dropped from a
segmentation, as detectron2 drops them (an annotation with no polygon left is refused). Optionally
joined to a SPIN-format npz by identity (`join`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import BodyTarget, DensePoints, PackedJSON, RawSample
from datamodules.readers.join import JoinReport, join_rows
from datamodules.readers.spin_npz import SpinNpz

PERSON_CATEGORY = 1
NUM_KEYPOINTS = 17
NUM_DP_MASKS = 14
DP_BOX_SIZE = 256
DP_FIELDS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
REQUIRED_FIELDS = ("id", "image_id", "category_id", "bbox")
# How far a box may stick out of its image: 1% of the image's side along that axis, at least 2 px.
# COCO boxes are the extent of hand-clicked polygons, whose points may land a few pixels past the border
# (1.6 px is common); the check is there to catch boxes in another image's pixels or convention (xyxy
# read as xywh, another resolution), which miss by far more than a percent of the image.
BOX_SLACK_FRACTION = 0.01
BOX_SLACK_MIN_PX = 2.0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _numbers(value: Any) -> np.ndarray | None:
    """A JSON list of numbers as a (n,) float64 array; None if it is anything else."""
    if not isinstance(value, list):
        return None
    if not value:
        return np.zeros(0)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        return None
    return array.astype(np.float64)


def rle_counts(rle: dict[str, Any]) -> np.ndarray:
    """Run lengths (n,) int64 of a COCO RLE (compressed string or list of counts), checked to fill its size.

    Raises ValueError on anything that is not a well-formed RLE of exactly size[0] * size[1] pixels
    (pycocotools decodes without bounds checks, so we never hand it an unchecked RLE).
    """
    return _checked_runs([rle])[0]


def _checked_runs(rles: list[dict[str, Any]]) -> list[np.ndarray]:
    """Run lengths of each RLE, checked to cover exactly its size; compressed strings decoded together."""
    runs: list[np.ndarray | None] = [None] * len(rles)
    texts = [i for i, rle in enumerate(rles) if isinstance(rle["counts"], str)]
    if texts:
        values, owner = _decode_count_strings([rles[i]["counts"] for i in texts])
        for j, part in enumerate(np.split(values, np.searchsorted(owner, np.arange(1, len(texts))))):
            runs[texts[j]] = part
    for i, rle in enumerate(rles):
        if runs[i] is None:
            values = _numbers(rle["counts"])
            if values is None or (values != np.round(values)).any():
                raise ValueError("counts are not integers")
            runs[i] = values.astype(np.int64)
        h, w = rle["size"]
        if (runs[i] < 0).any() or (runs[i] > h * w).any() or int(runs[i].sum()) != h * w:
            raise ValueError(f"runs do not cover {h}x{w} pixels")
    return runs


def _decode_count_strings(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """COCO's compressed RLE strings -> run lengths (R,) and the string (R,) each belongs to, all at once.

    Format: 5 bits per char (offset 48), 0x20 continues a value, 0x10 in its last char is the sign, and
    the runs of a string from its fourth on are deltas to the run two before.
    """
    try:
        encoded = [t.encode("ascii") for t in texts]
    except UnicodeEncodeError as exc:
        raise ValueError("counts string is not ASCII") from exc
    lengths = np.array([len(e) for e in encoded])
    if (lengths == 0).any():
        raise ValueError("empty counts string")
    chars = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64) - 48
    if (chars < 0).any() or (chars > 63).any():
        raise ValueError("counts string has characters outside the RLE alphabet")
    more = (chars & 0x20) != 0
    string_end = np.cumsum(lengths) - 1
    if more[string_end].any():
        raise ValueError("counts string is truncated")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if (ends - starts).max() >= 12:
        raise ValueError("counts string has a value over 60 bits")
    shift = 5 * (np.arange(len(chars)) - np.repeat(starts, ends - starts + 1))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values | (np.int64(-1) << (shift[ends] + 5)), values)

    owner = np.searchsorted(string_end, ends)
    k = np.arange(len(values)) - np.searchsorted(owner, owner)
    # runs[k] = values[k] + runs[k - 2] for k >= 3: a cumulative sum along each (string, parity) chain,
    # where run 0 is a chain of its own (run 2 is not a delta).
    chain = owner * 3 + np.where(k == 0, 0, 1 + k % 2)
    order = np.argsort(chain, kind="stable")
    sorted_values = values[order]
    total = np.cumsum(sorted_values)
    sorted_chain = chain[order]
    first = np.flatnonzero(np.concatenate([[True], sorted_chain[1:] != sorted_chain[:-1]]))
    before = np.repeat(total[first] - sorted_values[first], np.diff(np.concatenate([first, [len(values)]])))
    runs = np.empty_like(values)
    runs[order] = total - before
    return runs, owner


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """(H, W) uint8 0/1 mask of a COCO RLE (column-major runs, starting with background)."""
    h, w = rle["size"]
    runs = rle_counts(rle)
    labels = (np.arange(len(runs)) % 2).astype(np.uint8)
    return np.repeat(labels, runs).reshape(w, h).T


def part_label_map(dp_masks: list[dict[str, Any] | None]) -> np.ndarray:
    """(256, 256) uint8 map of DensePose's 14 part masks over the box: each pixel holds the last part
    (1..14) covering it, as DensePose's evaluator paints them in order; 0 is background."""
    present = [(label, rle) for label, rle in enumerate(dp_masks, start=1) if rle is not None]
    flat = np.zeros(DP_BOX_SIZE * DP_BOX_SIZE, dtype=np.uint8)
    if not present:
        return flat.reshape(DP_BOX_SIZE, DP_BOX_SIZE)
    for (label, rle), runs in zip(present, _checked_runs([rle for _, rle in present]), strict=True):
        if tuple(rle["size"]) != (DP_BOX_SIZE, DP_BOX_SIZE):
            raise ValueError("part mask is not 256x256")
        flat[np.repeat(np.arange(len(runs)) % 2 == 1, runs)] = label
    return flat.reshape(DP_BOX_SIZE, DP_BOX_SIZE).T


def _rle_problem(rle: Any, size: tuple[int, int] | None) -> str | None:
    """Why `rle` is not a structurally valid RLE (of `size`, when given); None if it is."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return "not an RLE"
    shape = rle["size"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) and s > 0 for s in shape)):
        return "RLE size is not two positive integers"
    if size is not None and tuple(shape) != size:
        return "RLE size differs from the image"
    if not isinstance(rle["counts"], (str, list)):
        return "RLE counts are neither a string nor a list"
    if isinstance(rle["counts"], list):
        try:
            rle_counts(rle)
        except ValueError as exc:
            return f"bad RLE: {exc}"
    return None


@dataclass
class _Parsed:
    """One person annotation that passed the structural checks (types, fields, lengths)."""

    index: int
    ann_id: int
    image: int
    bbox: list[float]
    area: float | None
    keypoints: np.ndarray | None
    dense: list[np.ndarray] | None
    dp_masks: list[Any] | None
    segmentation: Any
    polygon_xy: np.ndarray | None


class DensePoseCocoReader:
    """People of a DensePose-COCO JSON, validated at load time; bad ones raise or are counted in `log`.

    smpl: an optional SPIN-format npz whose rows add SMPL parameters, 3D joints and camera to the persons
    they join (`join.join_rows`; box_padding: the factor the npz's `scale` holds over the person box).
    join_report: how they joined (None without an npz).  dropped_polygons: polygons of < 3 points dropped.
    """

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path,
        log: BadSampleLog,
        smpl: SpinNpz | None = None,
        box_padding: float = 1.0,
    ) -> None:
        self.path = Path(json_path)
        self.image_root = Path(image_root)
        self.smpl = smpl
        self.join_report: JoinReport | None = None
        self.dropped_polygons = 0
        data = self._load_json()
        self._image_names, self._image_index, self._image_sizes = self._read_images(data["images"])
        self._image_ids = np.fromiter(self._image_index, dtype=np.int64, count=len(self._image_index))
        parsed = self._parse_annotations(data["annotations"], log)
        parsed = self._check_values(parsed, log)
        if smpl is not None:
            parsed = self._join_smpl(parsed, smpl, box_padding)
        self._store(parsed)

    @property
    def source(self) -> str:
        return str(self.path)

    def _error(self, field: str, reason: str, ann_id: Any = None, detail: str = "") -> DataError:
        return DataError.at(self.path, field, reason, ann_id=ann_id, detail=detail)

    def _load_json(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise self._error("file", "missing file")
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise self._error("file", "unreadable JSON", detail=str(exc)) from exc
        if not isinstance(data, dict):
            raise self._error("file", "not a JSON object")
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise self._error(key, "missing field" if key not in data else "not a list")
        return data

    def _read_images(self, images: list[Any]) -> tuple[list[str], dict[int, int], np.ndarray]:
        names, ids, sizes = [], {}, []
        for k, image in enumerate(images):
            ok = isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)
            ok = ok and all(_is_int(image.get(s)) and image[s] > 0 for s in ("width", "height"))
            if not ok:
                raise self._error("images", "malformed image entry", detail=f"entry {k}: {image!r:.200}")
            if image["id"] in ids:
                raise self._error("images", "duplicate image id", detail=str(image["id"]))
            ids[image["id"]] = len(names)
            names.append(image["file_name"])
            sizes.append((image["height"], image["width"]))
        return names, ids, np.asarray(sizes, dtype=np.int64).reshape(-1, 2)

    def _parse_annotations(self, annotations: list[Any], log: BadSampleLog) -> list[_Parsed]:
        parsed = []
        for k, ann in enumerate(annotations):
            result = self._parse_one(ann, k)
            if isinstance(result, DataError):
                log.report(result)
            elif result is not None:
                parsed.append(result)
        return parsed

    def _parse_one(self, ann: Any, k: int) -> _Parsed | DataError | None:
        """Structural checks of one annotation; None for crowd and non-person annotations."""
        if not isinstance(ann, dict):
            return self._error("annotation", "not a JSON object", ann_id=f"#{k}")
        ann_id = ann.get("id", f"#{k}")
        for key in REQUIRED_FIELDS:
            if key not in ann:
                return self._error(key, "missing field", ann_id)
        for key in ("id", "image_id", "category_id"):
            if not _is_int(ann[key]):
                return self._error(key, "wrong type", ann_id, detail=f"{ann[key]!r:.50}")
        if ann.get("iscrowd", 0) not in (0, 1):
            return self._error("iscrowd", "not 0 or 1", ann_id, detail=f"{ann['iscrowd']!r:.50}")
        if ann["category_id"] != PERSON_CATEGORY or ann.get("iscrowd", 0):
            return None
        if ann["image_id"] not in self._image_index:
            return self._error("image_id", "unknown image", ann_id, detail=str(ann["image_id"]))
        image = self._image_index[ann["image_id"]]
        size = tuple(int(s) for s in self._image_sizes[image])

        bbox = _numbers(ann["bbox"])
        if bbox is None or len(bbox) != 4:
            return self._error("bbox", "not 4 numbers", ann_id, detail=f"{ann['bbox']!r:.80}")
        area = ann.get("area")
        if area is not None and not _is_number(area):
            return self._error("area", "wrong type", ann_id)

        keypoints = None
        if ann.get("keypoints") is not None:
            keypoints = _numbers(ann["keypoints"])
            if keypoints is None or len(keypoints) != 3 * NUM_KEYPOINTS:
                return self._error("keypoints", "not 51 numbers", ann_id)

        dense = None
        present = [key for key in DP_FIELDS if key in ann]
        if present:
            missing = [key for key in DP_FIELDS if key not in ann]
            if missing:
                return self._error(missing[0], "missing field", ann_id, detail="other dp_* fields are present")
            dense = []
            for key in DP_FIELDS:
                values = _numbers(ann[key])
                if values is None:
                    return self._error(key, "not a list of numbers", ann_id)
                dense.append(values)
            lengths = {len(d) for d in dense}
            if len(lengths) > 1:
                return self._error("dp_x", "unequal lengths", ann_id, detail=f"{[len(d) for d in dense]}")
            if lengths == {0}:
                dense = None

        dp_masks = None
        if ann.get("dp_masks") is not None:
            masks = ann["dp_masks"]
            if not isinstance(masks, list) or len(masks) != NUM_DP_MASKS:
                return self._error("dp_masks", "not a list of 14", ann_id)
            dp_masks = []
            for rle in masks:
                if isinstance(rle, list) and not rle:
                    dp_masks.append(None)
                    continue
                problem = _rle_problem(rle, (DP_BOX_SIZE, DP_BOX_SIZE))
                if problem:
                    return self._error("dp_masks", problem, ann_id)
                dp_masks.append(rle)

        segmentation, polygon_xy = ann.get("segmentation"), None
        if isinstance(segmentation, list):
            polygons = [_numbers(p) for p in segmentation]
            if any(p is None for p in polygons):
                return self._error("segmentation", "not polygons", ann_id)
            kept = [p for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
            if polygons and not kept:
                return self._error("segmentation", "not polygons", ann_id, detail="none of 3 or more points")
            self.dropped_polygons += len(polygons) - len(kept)
            polygons = kept
            segmentation = [p.tolist() for p in polygons] or None
            polygon_xy = np.concatenate(polygons).reshape(-1, 2) if polygons else None
        elif segmentation is not None:
            problem = _rle_problem(segmentation, size)
            if problem:
                return self._error("segmentation", problem, ann_id)
        return _Parsed(
            k,
            int(ann["id"]),
            image,
            bbox.tolist(),
            area,
            keypoints,
            dense,
            dp_masks,
            segmentation,
            polygon_xy,
        )

    def _check_values(self, parsed: list[_Parsed], log: BadSampleLog) -> list[_Parsed]:
        """Value checks over all annotations at once; first failing check per annotation is reported."""
        m = len(parsed)
        if m == 0:
            return parsed
        sizes = self._image_sizes[[p.image for p in parsed]].astype(np.float64)  # (M, 2) h, w
        checks: list[tuple[str, str, np.ndarray]] = []

        bbox = np.asarray([p.bbox for p in parsed])
        finite = np.isfinite(bbox).all(1)
        checks.append(("bbox", "not finite", ~finite))
        checks.append(("bbox", "empty box", finite & ~((bbox[:, 2] > 0) & (bbox[:, 3] > 0))))
        slack = np.maximum(BOX_SLACK_FRACTION * sizes, BOX_SLACK_MIN_PX)  # (M, 2) h, w
        inside = (bbox[:, 0] >= -slack[:, 1]) & (bbox[:, 1] >= -slack[:, 0])
        inside &= bbox[:, 0] + bbox[:, 2] <= sizes[:, 1] + slack[:, 1]
        inside &= bbox[:, 1] + bbox[:, 3] <= sizes[:, 0] + slack[:, 0]
        checks.append(("bbox", "outside the image", finite & ~inside))

        area = np.asarray([np.nan if p.area is None else p.area for p in parsed], dtype=np.float64)
        given = np.asarray([p.area is not None for p in parsed])
        checks.append(("area", "not a finite non-negative number", given & ~(np.isfinite(area) & (area >= 0))))
        checks.append(("area", "larger than the image", given & (area > sizes[:, 0] * sizes[:, 1])))

        has_kp = np.asarray([p.keypoints is not None for p in parsed])
        if has_kp.any():
            kp = np.stack([p.keypoints.reshape(NUM_KEYPOINTS, 3) for p in parsed if p.keypoints is not None])
            bad_kp = np.zeros(m, dtype=bool)
            bad_kp[has_kp] = ~np.isfinite(kp).reshape(len(kp), -1).all(1)
            bad_v = np.zeros(m, dtype=bool)
            bad_v[has_kp] = ~np.isin(kp[..., 2], (0, 1, 2)).all(1)
            # Like polygons, keypoints stay within the image grown by its own size (a 1e39 is finite in
            # float64, inf in the float32 samples).
            hw = sizes[has_kp][:, None, ::-1]
            far = np.zeros(m, dtype=bool)
            far[has_kp] = ~((kp[..., :2] >= -hw) & (kp[..., :2] <= 2 * hw)).all((1, 2))
            checks += [("keypoints", "not finite", bad_kp), ("keypoints", "visibility not 0, 1 or 2", bad_v),
                       ("keypoints", "outside the image", far & ~bad_kp)]

        dense_owner = [i for i, p in enumerate(parsed) if p.dense is not None]
        if dense_owner:
            lengths = [len(parsed[i].dense[0]) for i in dense_owner]
            seg = np.repeat(dense_owner, lengths)
            flat = {key: np.concatenate([parsed[i].dense[j] for i in dense_owner]) for j, key in enumerate(DP_FIELDS)}

            def per_annotation(bad_points: np.ndarray) -> np.ndarray:
                return np.bincount(seg[bad_points], minlength=m) > 0

            for key in DP_FIELDS:
                checks.append((key, "not finite", per_annotation(~np.isfinite(flat[key]))))
            for key in ("dp_x", "dp_y"):
                checks.append((key, "outside 0..256", per_annotation(~((flat[key] >= 0) & (flat[key] <= 256)))))
            part = flat["dp_I"]
            checks.append(("dp_I", "not an integer", per_annotation(part != np.round(part))))
            checks.append(("dp_I", "outside 1..24", per_annotation(~((part >= 1) & (part <= 24)))))
            for key in ("dp_U", "dp_V"):
                checks.append((key, "outside [0, 1]", per_annotation(~((flat[key] >= 0) & (flat[key] <= 1)))))

        poly_owner = [i for i, p in enumerate(parsed) if p.polygon_xy is not None]
        if poly_owner:
            xy = np.concatenate([parsed[i].polygon_xy for i in poly_owner])
            seg = np.repeat(poly_owner, [len(parsed[i].polygon_xy) for i in poly_owner])
            hw = sizes[seg]
            # Polygons are rasterized, so they must stay near the image (a far point would be a huge raster).
            near = (xy >= -hw[:, ::-1]) & (xy <= 2 * hw[:, ::-1])
            bad = np.bincount(seg[~np.isfinite(xy).all(1)], minlength=m) > 0
            far = np.bincount(seg[~near.all(1)], minlength=m) > 0
            checks += [("segmentation", "not finite", bad), ("segmentation", "outside the image", far & ~bad)]

        failed = np.logical_or.reduce([bad for _, _, bad in checks])
        for i in np.flatnonzero(failed):
            field, reason = next((f, r) for f, r, bad in checks if bad[i])
            log.report(self._error(field, reason, parsed[i].ann_id))
        return [p for i, p in enumerate(parsed) if not failed[i]]

    def _join_smpl(self, parsed: list[_Parsed], smpl: SpinNpz, box_padding: float) -> list[_Parsed]:
        """Remember each annotation's npz row (-1: none); drop those whose row is invalid (reported)."""
        rows, self.join_report = join_rows(
            np.asarray([p.ann_id for p in parsed], dtype=np.int64),
            [self._image_names[p.image] for p in parsed],
            np.asarray([p.bbox for p in parsed], dtype=np.float64).reshape(-1, 4),
            smpl,
            box_padding,
        )
        keep = rows != -2
        self._smpl_rows = rows[keep]
        return [p for p, k in zip(parsed, keep, strict=True) if k]

    def _store(self, parsed: list[_Parsed]) -> None:
        """Pack the kept annotations into arrays (cheap to share with DataLoader workers)."""
        n = len(parsed)
        self._ann_ids = np.asarray([p.ann_id for p in parsed], dtype=np.int64)
        self._images = np.asarray([p.image for p in parsed], dtype=np.int64)
        self._bbox = np.asarray([p.bbox for p in parsed], dtype=np.float64).reshape(n, 4)
        self._area = np.asarray(
            [p.area if p.area is not None else p.bbox[2] * p.bbox[3] for p in parsed], dtype=np.float64
        )
        self._has_kp = np.asarray(
            [p.keypoints is not None and (p.keypoints[2::3] > 0).any() for p in parsed], dtype=bool
        )
        self._keypoints = (
            np.stack(
                [
                    p.keypoints.reshape(NUM_KEYPOINTS, 3) if p.keypoints is not None else np.zeros((17, 3))
                    for p in parsed
                ]
            ).astype(np.float32)
            if n
            else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        )
        lengths = [len(p.dense[0]) if p.dense is not None else 0 for p in parsed]
        self._dp_offsets = np.cumsum([0] + lengths, dtype=np.int64)
        dense = [p.dense for p in parsed if p.dense is not None]
        self._dp = [np.concatenate([d[j] for d in dense]) if dense else np.zeros(0) for j in range(len(DP_FIELDS))]
        self._dp_masks = PackedJSON([p.dp_masks for p in parsed])
        self._segmentation = PackedJSON([p.segmentation for p in parsed])
        if self.smpl is None:
            self._smpl_rows = np.full(n, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ann_ids)

    def dense_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every kept DensePose point: part (T,) int64, U, V (T,) float32, indexed by `DensePoints.offset`."""
        return self._dp[2].astype(np.int64), self._dp[3].astype(np.float32), self._dp[4].astype(np.float32)

    def raw(self, index: int) -> RawSample:
        image = int(self._images[index])
        bbox = self._bbox[index].copy()
        start, end = self._dp_offsets[index], self._dp_offsets[index + 1]
        dense = None
        if end > start:
            x, y, part, u, v = (d[start:end] for d in self._dp)
            dense = DensePoints(
                x=bbox[0] + x / DP_BOX_SIZE * bbox[2],
                y=bbox[1] + y / DP_BOX_SIZE * bbox[3],
                part=part.astype(np.int64),
                u=u.astype(np.float32),
                v=v.astype(np.float32),
                offset=int(start),
            )
        row = int(self._smpl_rows[index])
        masks = self._dp_masks[index]
        body: BodyTarget | None = self.smpl.target(row) if row >= 0 and self.smpl is not None else None
        return RawSample(
            source=self.source,
            image_path=self.image_root / self._image_names[image],
            image_size=(int(self._image_sizes[image, 0]), int(self._image_sizes[image, 1])),
            image_id=int(self._image_ids[image]),
            ann_id=int(self._ann_ids[index]),
            bbox=bbox,
            area=float(self._area[index]),
            keypoints=self._keypoints[index].copy() if self._has_kp[index] else None,
            dense=dense,
            dp_masks=masks if masks is not None and any(m is not None for m in masks) else None,
            segmentation=self._segmentation[index],
            body=body,
        )
