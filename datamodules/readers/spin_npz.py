"""SPIN/PyMAF `.npz` sidecars: SMPL-format parameters, 3D joints and camera per person.

Arrays (N rows): imgname (N,) paths relative to the image root, center (N, 2) px, scale (N,) box size / 200,
pose (N, 72) axis-angle (global orient first, camera frame), shape (N, 10), S (N, 17, 4) H36M-17
camera-frame metres + confidence, part (N, 17, 3) COCO-17 image px + visibility, has_smpl (N,),
cam_K (N, 3, 3) image-px intrinsics, cam_t (N, 3) metres, and optionally ann_id (N,) linking rows to
DensePose-COCO annotations. Only imgname, center and scale are required.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import BodyTarget, RawSample

# name -> shape of one row.
_SHAPES: dict[str, tuple[int, ...]] = {
    "imgname": (),
    "center": (2,),
    "scale": (),
    "pose": (72,),
    "shape": (10,),
    "S": (17, 4),
    "part": (17, 3),
    "has_smpl": (),
    "cam_K": (3, 3),
    "cam_t": (3,),
    "ann_id": (),
}
_REQUIRED = ("imgname", "center", "scale")


class SpinNpz:
    """The validated arrays of one SPIN-format npz. Bad rows are reported through `log` and marked invalid.

    valid: (N,) bool rows that passed validation.  row_ids: (N,) int64 ann_id, or the row index.
    """

    def __init__(self, path: str | Path, log: BadSampleLog) -> None:
        self.path = Path(path)
        self.arrays = self._load()
        self.num_rows = int(self.arrays["imgname"].shape[0])
        if "ann_id" in self.arrays:
            self.row_ids = self.arrays["ann_id"].astype(np.int64)
        else:
            self.row_ids = np.arange(self.num_rows, dtype=np.int64)
        self.valid = self._validate_rows(log)

    def _error(self, field: str, reason: str, row: int | None = None, detail: str = "") -> DataError:
        ann = None if row is None else int(self.row_ids[row])
        return DataError.at(self.path, field, reason, ann_id=ann, detail=detail)

    def _load(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            raise self._error("file", "missing file")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k in _SHAPES}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise self._error("file", "unreadable npz", detail=str(exc)) from exc
        for key in _REQUIRED:
            if key not in arrays:
                raise self._error(key, "missing field")
        n = arrays["imgname"].shape[0] if arrays["imgname"].ndim == 1 else -1
        for key, array in arrays.items():
            if array.shape != (n, *_SHAPES[key]):
                raise self._error(key, "wrong shape", detail=f"{array.shape}, expected (N, {_SHAPES[key]})")
            wanted = "US" if key == "imgname" else "iu" if key == "ann_id" else "biuf"
            if array.dtype.kind not in wanted:
                raise self._error(key, "wrong type", detail=str(array.dtype))
        if "ann_id" in arrays and len(np.unique(arrays["ann_id"])) != n:
            raise self._error("ann_id", "duplicate ids")
        return arrays

    def _validate_rows(self, log: BadSampleLog) -> np.ndarray:
        a, n = self.arrays, self.num_rows
        has_smpl = self.has_smpl_mask()
        checks: list[tuple[str, str, np.ndarray]] = [
            ("center", "not finite", ~np.isfinite(a["center"]).all(1)),
            ("scale", "not positive", ~(np.isfinite(a["scale"]) & (a["scale"] > 0))),
        ]
        if "has_smpl" in a:
            checks.append(("has_smpl", "not 0 or 1", ~np.isin(a["has_smpl"], (0, 1))))
        for key in ("pose", "shape"):
            if key in a:
                checks.append((key, "not finite", has_smpl & ~np.isfinite(a[key]).reshape(n, -1).all(1)))
        if "S" in a:
            s = a["S"]
            checks.append(("S", "not finite", ~np.isfinite(s).reshape(n, -1).all(1)))
            checks.append(("S", "confidence outside [0, 1]", ~((s[..., 3] >= 0) & (s[..., 3] <= 1)).all(1)))
        if "part" in a:
            p = a["part"]
            checks.append(("part", "not finite", ~np.isfinite(p).reshape(n, -1).all(1)))
            checks.append(("part", "visibility outside [0, 2]", ~((p[..., 2] >= 0) & (p[..., 2] <= 2)).all(1)))
        if "cam_K" in a:
            k = a["cam_K"]
            good = np.isfinite(k).reshape(n, -1).all(1) & (k[:, 0, 0] > 0) & (k[:, 1, 1] > 0)
            good &= np.all(k[:, 2] == np.array([0.0, 0.0, 1.0]), axis=1)
            checks.append(("cam_K", "not a camera matrix", ~good))
        if "cam_t" in a:
            t = a["cam_t"]
            checks.append(("cam_t", "not in front of the camera", ~(np.isfinite(t).all(1) & (t[:, 2] > 0))))
        valid = np.ones(n, dtype=bool)
        bad_rows = sorted({int(r) for _, _, bad in checks for r in np.flatnonzero(bad)})
        for row in bad_rows:
            field, reason = next((f, r) for f, r, bad in checks if bad[row])
            log.report(self._error(field, reason, row))
            valid[row] = False
        return valid

    def has_smpl_mask(self) -> np.ndarray:
        """(N,) bool rows with SMPL-format parameters."""
        a = self.arrays
        if "pose" not in a or "shape" not in a:
            return np.zeros(self.num_rows, dtype=bool)
        return a["has_smpl"] > 0 if "has_smpl" in a else np.ones(self.num_rows, dtype=bool)

    def target(self, row: int) -> BodyTarget:
        """The row's parameters, joints and camera (None for what the file lacks)."""
        a = self.arrays
        has_smpl = bool(self.has_smpl_mask()[row])
        joints = a["S"][row].astype(np.float32) if "S" in a and (a["S"][row, :, 3] > 0).any() else None
        return BodyTarget(
            pose=a["pose"][row].astype(np.float32) if has_smpl else None,
            betas=a["shape"][row].astype(np.float32) if has_smpl else None,
            joints3d=joints,
            cam_K=a["cam_K"][row].astype(np.float64) if "cam_K" in a else None,
            cam_t=a["cam_t"][row].astype(np.float64) if "cam_t" in a else None,
        )


class SpinNpzReader:
    """People of a SPIN-format npz on their own (3DPW / H36M-like datasets): one sample per valid row.

    box_padding: the factor already applied to the box in `scale` (SPIN's 3DPW/H36M files use 1.2);
    the person box is scale * 200 / box_padding, square, about `center`.
    """

    def __init__(
        self, npz_path: str | Path, image_root: str | Path, log: BadSampleLog, box_padding: float = 1.0
    ) -> None:
        self.table = SpinNpz(npz_path, log)
        self.image_root = Path(image_root)
        self.box_padding = float(box_padding)
        self.rows = np.flatnonzero(self.table.valid)
        names = self.table.arrays["imgname"]
        _, self.image_ids = np.unique(names, return_inverse=True)

    @property
    def source(self) -> str:
        return str(self.table.path)

    def __len__(self) -> int:
        return len(self.rows)

    def raw(self, index: int) -> RawSample:
        row = int(self.rows[index])
        a = self.table.arrays
        size = float(a["scale"][row]) * 200.0 / self.box_padding
        cx, cy = a["center"][row].astype(np.float64)
        keypoints = a["part"][row].astype(np.float32) if "part" in a else None
        if keypoints is not None and not (keypoints[:, 2] > 0).any():
            keypoints = None
        name = a["imgname"][row]
        return RawSample(
            source=self.source,
            image_path=self.image_root / (name.decode() if isinstance(name, bytes) else str(name)),
            image_size=None,
            image_id=int(self.image_ids[row]),
            ann_id=int(self.table.row_ids[row]),
            bbox=np.array([cx - size / 2, cy - size / 2, size, size]),
            area=size * size,
            keypoints=keypoints,
            dense=None,
            dp_masks=None,
            segmentation=None,
            body=self.table.target(row),
        )
