"""SPIN/PyMAF/EFT `.npz` files: per person a box, and whatever 2D keypoints, 3D joints, SMPL-format
parameters and camera the dataset has.

Arrays (N rows; only imgname, center and scale are required):
  imgname (N,) image paths relative to the dataset's image root, exactly as written (e.g. H36M's
    `images/S9_...jpg`, COCO's `train2014/COCO_train2014_...jpg`, 3DPW's `imageFiles/<seq>/image_00000.jpg`);
  center (N, 2) px and scale (N,) = SPIN's crop box side / 200 (the person box grown by the dataset's
    factor, 1.2 for most of SPIN's files);
  part (N, 24, 3) 2D keypoints px + visibility in SPIN's 24-joint order, or (N, 17, 3) COCO-17;
  S (N, 24, 4) 3D joints metres + confidence in SPIN's 24-joint order, or (N, 17, 4) H36M-17;
  openpose (N, 25, 3) OpenPose BODY_25 detections px + confidence (validated and counted; SPIN and
    PyMAF train with their weight at 0, so they are not supervision here);
  pose (N, 72) axis-angle, global orient first, camera frame; shape (N, 10); has_smpl (N,) 0/1;
  gender (N,) 'm' / 'f' ('n' neutral) of the GT body (3DPW);
  cam_K (N, 3, 3) image-px intrinsics and cam_t (N, 3) metres (our synthetic files; no real file has them);
  ann_id (N,) or EFT's annotIds (N,): the COCO annotation id of each row.

Where a file gives a camera, S is in its frame; otherwise S is relative to the pelvis (SPIN's files) and
the rows get SPIN's fixed-focal camera (`camera_fit`), with S placed by a least-squares fit to `part`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from datamodules.camera_fit import fit_translation, spin_camera
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import VALUE_BOUNDS, BodyTarget, RawSample
from datamodules.readers.joints import (
    COCO17_FROM_SPIN24,
    H36M17_FROM_SPIN24,
    OPENPOSE25_NAMES,
    SPIN24_NAMES,
    spin24_from,
)

# name -> accepted shapes of one row (SPIN's layout first).
_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "imgname": ((),),
    "center": ((2,),),
    "scale": ((),),
    "pose": ((72,),),
    "shape": ((10,),),
    "S": ((len(SPIN24_NAMES), 4), (17, 4)),
    "part": ((len(SPIN24_NAMES), 3), (17, 3)),
    "openpose": ((len(OPENPOSE25_NAMES), 3),),
    "has_smpl": ((),),
    "gender": ((),),
    "cam_K": ((3, 3),),
    "cam_t": ((3,),),
    "ann_id": ((),),
    "annotIds": ((),),
}
_KINDS = {"imgname": "US", "gender": "US", "ann_id": "iu", "annotIds": "iu"}
_REQUIRED = ("imgname", "center", "scale")
ID_FIELDS = ("ann_id", "annotIds")  # ours, EFT's
# Gender codes carried by samples and batches.
GENDERS = {"n": 0, "m": 1, "f": 2}


def _range_checks(a: dict[str, np.ndarray], n: int, has_smpl: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """Finite values that are still no person's (a file's 1e39 overflows the float32 samples to inf): per
    field, (field, reason, (N,) bool bad rows), with the bounds of readers.VALUE_BOUNDS."""
    def beyond(values: np.ndarray, bound: float) -> np.ndarray:
        return (np.abs(values.reshape(n, -1)) > bound).any(1)

    px, far, body = VALUE_BOUNDS["pixels"], VALUE_BOUNDS["camera_metres"], VALUE_BOUNDS["body_metres"]
    checks = [("center", f"beyond {px:g} px", beyond(a["center"], px)),
              ("scale", f"a box beyond {px:g} px", a["scale"] * 200 > px)]
    for key in ("part", "openpose"):
        if key in a:
            checks.append((key, f"beyond {px:g} px", beyond(a[key][..., :2], px)))
    if "S" in a:
        xyz, sure = a["S"][..., :3], a["S"][..., 3] > 0
        centre = (xyz * sure[..., None]).sum(1) / np.maximum(sure.sum(1), 1)[:, None]
        reach = np.where(sure, np.linalg.norm(xyz - centre[:, None], axis=-1), 0).max(1)
        checks += [("S", f"beyond {far:g} m", beyond(xyz, far)),
                   ("S", f"a joint over {body:g} m from the body's centre", reach > body)]
    if "pose" in a:
        turns = np.linalg.norm(a["pose"].reshape(n, 24, 3), axis=-1) > VALUE_BOUNDS["rotation_rad"]
        checks.append(("pose", f"a rotation beyond {VALUE_BOUNDS['rotation_rad']:.4g} rad", has_smpl & turns.any(1)))
    if "shape" in a:
        betas = VALUE_BOUNDS["betas"]
        checks.append(("shape", f"beyond ±{betas:g}", has_smpl & beyond(a["shape"], betas)))
    if "cam_t" in a:
        checks.append(("cam_t", f"beyond {far:g} m", beyond(a["cam_t"], far)))
    if "cam_K" in a:
        checks.append(("cam_K", f"beyond {px:g} px", beyond(a["cam_K"], px)))
    return checks


class SpinNpz:
    """The validated arrays of one SPIN-format npz. Bad rows are reported through `log` and marked invalid.

    valid: (N,) bool rows that passed validation.  ann_ids: (N,) int64 annotation ids, or None.
    keypoints: (N, 17, 3) COCO-17 px + visibility.  joints3d: (N, 17, 4) H36M-17 metres + confidence,
    in the camera frame where joints_placed (N,), else relative to the pelvis as the file gives it.
    cam_K: (N, 3, 3), cam_t: (N, 3), has_cam: (N,) (cam_t of rows with SMPL parameters but no file
    camera is left to `camera_fit.BodyCameraFit`).  gender: (N,) int8 GENDERS codes.  has_smpl: (N,) bool.
    camera_from_file: whether the file gave the cameras.
    """

    def __init__(self, path: str | Path, log: BadSampleLog) -> None:
        self.path = Path(path)
        self.arrays = self._load()
        self.num_rows = int(self.arrays["imgname"].shape[0])
        id_field = next((f for f in ID_FIELDS if f in self.arrays), None)
        self.ann_ids = self.arrays[id_field].astype(np.int64) if id_field else None
        self.gender = self._genders()
        self.has_smpl = self._smpl_rows()
        self.valid = self._validate_rows(log)
        n = self.num_rows
        part = self.arrays.get("part", np.zeros((n, len(SPIN24_NAMES), 3)))
        self.keypoints = part[:, COCO17_FROM_SPIN24].astype(np.float32)
        self.camera_from_file = "cam_K" in self.arrays and "cam_t" in self.arrays
        self._place_cameras()

    def record(self, row: int) -> int | str:
        """How messages name a row: its annotation id, or its row number when the file has none."""
        return int(self.ann_ids[row]) if self.ann_ids is not None else f"row {row}"

    def _error(self, field: str, reason: str, row: int | None = None, detail: str = "") -> DataError:
        return DataError.at(self.path, field, reason, ann_id=None if row is None else self.record(row), detail=detail)

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
        if "cam_t" in arrays and "cam_K" not in arrays:
            raise self._error("cam_K", "missing field", detail="cam_t is given")
        n = arrays["imgname"].shape[0] if arrays["imgname"].ndim == 1 else -1
        if n == 0:
            raise self._error("imgname", "no rows", detail="the file holds no person")
        for key, array in arrays.items():
            shapes = [(n, *s) for s in _SHAPES[key]]
            if array.shape not in shapes:
                expected = " or ".join("(N, " + ", ".join(map(str, s)) + ")" if s else "(N,)" for s in _SHAPES[key])
                raise self._error(key, "wrong shape", detail=f"{array.shape}, expected {expected}")
            if array.dtype.kind not in _KINDS.get(key, "biuf"):
                raise self._error(key, "wrong type", detail=str(array.dtype))
        ids = [k for k in ID_FIELDS if k in arrays]
        if len(ids) > 1:
            raise self._error(ids[1], "two id fields", detail=f"also {ids[0]}")
        if ids and len(np.unique(arrays[ids[0]])) != n:
            raise self._error(ids[0], "duplicate ids")
        # One layout from here on: SPIN's 24 joints for part and S.
        if "part" in arrays and arrays["part"].shape[1] == 17:
            arrays["part"] = spin24_from(arrays["part"], COCO17_FROM_SPIN24)
        if "S" in arrays and arrays["S"].shape[1] == 17:
            arrays["S"] = spin24_from(arrays["S"], H36M17_FROM_SPIN24)
        return arrays

    def _genders(self) -> np.ndarray:
        """(N,) int8 codes; -1 for values that are not a gender (reported by `_validate_rows`)."""
        if "gender" not in self.arrays:
            return np.zeros(self.num_rows, dtype=np.int8)
        names = np.char.lower(np.char.strip(self.arrays["gender"].astype(str)))
        return np.array([GENDERS.get(str(g), -1) for g in names], dtype=np.int8)

    def _validate_rows(self, log: BadSampleLog) -> np.ndarray:
        a, n = self.arrays, self.num_rows
        has_smpl = self.has_smpl
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
        if "openpose" in a:
            o = a["openpose"]
            checks.append(("openpose", "not finite", ~np.isfinite(o).reshape(n, -1).all(1)))
            checks.append(("openpose", "confidence outside [0, 1]", ~((o[..., 2] >= 0) & (o[..., 2] <= 1)).all(1)))
        if "gender" in a:
            checks.append(("gender", "not 'm', 'f' or 'n'", self.gender < 0))
        if "cam_K" in a:
            k = a["cam_K"]
            good = np.isfinite(k).reshape(n, -1).all(1) & (k[:, 0, 0] > 0) & (k[:, 1, 1] > 0)
            good &= np.all(k[:, 2] == np.array([0.0, 0.0, 1.0]), axis=1)
            checks.append(("cam_K", "not a camera matrix", ~good))
        if "cam_t" in a:
            t = a["cam_t"]
            checks.append(("cam_t", "not in front of the camera", ~(np.isfinite(t).all(1) & (t[:, 2] > 0))))
        checks += _range_checks(a, n, has_smpl)
        valid = np.ones(n, dtype=bool)
        bad_rows = sorted({int(r) for _, _, bad in checks for r in np.flatnonzero(bad)})
        for row in bad_rows:
            field, reason = next((f, r) for f, r, bad in checks if bad[row])
            log.report(self._error(field, reason, row))
            valid[row] = False
        return valid

    def _place_cameras(self) -> None:
        """Cameras and camera-frame 3D joints: the file's, or SPIN's camera with S placed by a fit to
        `part`; that translation is the row's camera translation only where the row has no SMPL
        parameters (a body's own is fitted to the keypoints by `camera_fit.BodyCameraFit`)."""
        a, n = self.arrays, self.num_rows
        s24 = a.get("S", np.zeros((n, len(SPIN24_NAMES), 4)))
        if self.camera_from_file:
            self.cam_K = a["cam_K"].astype(np.float64)
            self.cam_t = a["cam_t"].astype(np.float64)
            self.has_cam = self.valid.copy()
            self.joints_placed = self.valid.copy()
        else:
            self.cam_K = a["cam_K"].astype(np.float64) if "cam_K" in a else spin_camera(a["center"], a["scale"])
            self.cam_t = np.zeros((n, 3))
            self.has_cam = np.zeros(n, dtype=bool)
            self.joints_placed = np.zeros(n, dtype=bool)
            if "part" in a and "S" in a:
                rows = np.flatnonzero(self.valid & (s24[..., 3] > 0).any(1))
                weight = (s24[rows, :, 3] > 0) & (a["part"][rows, :, 2] > 0)
                t, ok = fit_translation(s24[rows, :, :3], a["part"][rows, :, :2], weight, self.cam_K[rows])
                placed = rows[ok]
                self.joints_placed[placed] = True
                s24 = s24.copy()
                s24[placed, :, :3] += t[ok, None]
                alone = ~self.has_smpl[placed]
                self.cam_t[placed[alone]] = t[ok][alone]
                self.has_cam[placed[alone]] = True
        self.joints3d = s24[:, H36M17_FROM_SPIN24].astype(np.float32)

    def _smpl_rows(self) -> np.ndarray:
        """(N,) bool rows with SMPL-format parameters."""
        a = self.arrays
        if "pose" not in a or "shape" not in a:
            return np.zeros(self.num_rows, dtype=bool)
        return a["has_smpl"] > 0 if "has_smpl" in a else np.ones(self.num_rows, dtype=bool)

    def image_name(self, row: int) -> str:
        """The row's image path as the file writes it."""
        name = self.arrays["imgname"][row]
        return name.decode() if isinstance(name, bytes) else str(name)

    def box(self, row: int, box_padding: float) -> np.ndarray:
        """(4,) xywh px: the square person box of a row whose `scale` holds `box_padding`."""
        size = float(self.arrays["scale"][row]) * 200.0 / box_padding
        cx, cy = self.arrays["center"][row].astype(np.float64)
        return np.array([cx - size / 2, cy - size / 2, size, size])

    def target(self, row: int) -> BodyTarget:
        """The row's parameters, joints, camera and gender (None for what the file lacks)."""
        a = self.arrays
        has_smpl = bool(self.has_smpl[row])
        joints = self.joints3d[row] if (self.joints3d[row, :, 3] > 0).any() else None
        has_t = bool(self.has_cam[row])
        return BodyTarget(
            pose=a["pose"][row].astype(np.float32) if has_smpl else None,
            betas=a["shape"][row].astype(np.float32) if has_smpl else None,
            joints3d=joints,
            cam_K=self.cam_K[row].copy(),
            cam_t=self.cam_t[row].copy() if has_t else None,
            gender=int(self.gender[row]),
            joints3d_in_camera=bool(self.joints_placed[row]),
        )


class SpinNpzReader:
    """People of a SPIN-format npz on their own (3DPW / H36M-like datasets): one sample per valid row.

    box_padding: the factor SPIN's `scale` holds over the person box (1.2 in its COCO, 3DPW and
    MPI-INF-3DHP files); the person box is scale * 200 / box_padding, square, about `center`, and our
    crop (the person box x 1.2) is then SPIN's when box_padding is 1.2.
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
        table = self.table
        keypoints = table.keypoints[row].copy()
        box = table.box(row, self.box_padding)
        return RawSample(
            source=self.source,
            image_path=self.image_root / table.image_name(row),
            image_size=None,
            image_id=int(self.image_ids[row]),
            ann_id=int(table.ann_ids[row]) if table.ann_ids is not None else row,
            bbox=box,
            area=float(box[2] * box[3]),
            keypoints=keypoints if (keypoints[:, 2] > 0).any() else None,
            dense=None,
            dp_masks=None,
            segmentation=None,
            body=table.target(row),
        )
