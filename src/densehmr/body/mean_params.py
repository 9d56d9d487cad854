"""Mean body parameters, the starting estimate of HMR-style iterative regressors (SPIN's `smpl_mean_params.npz`).

The file holds `pose` (144,) the 24 joint rotations in the 6D layout of `densehmr.geometry.rotations`
(global orient first, camera frame), `shape` (10,) betas and `cam` (3,) a weak-perspective camera
(s, tx, ty) of the person crop (see `densehmr.render.cameras`). SPIN's own file has the same keys, so a
user's SMPL setup can point at it.

Computed from a training split's SPIN-format npz (`mean_params_from_npz`), or, without data, the
documented default (`default_mean_params`): the T-pose with zero betas standing upright and facing
the camera (global orient a half turn about x: the body is y-up facing +z, the camera frame is
OpenCV's, y down and z forward), framed as a crop frames a person.
Rebuild the open body's file with `python -m densehmr.body.mean_params [--npz data/synthetic/train/smpl_train.npz]`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from densehmr.body.assets import Body
from densehmr.body.loader import OPEN_BODY_DIR, load_body
from densehmr.geometry.rotations import (
    axis_angle_to_rotmat,
    project_to_rotation,
    rotmat_to_rot6d,
)

KEYS = ("pose", "shape", "cam")
NUM_JOINTS = 24
NUM_BETAS = 10
# Crops frame the person box scaled by this factor (datamodules' BOX_PADDING); SPIN's `scale` is the
# unpadded box side / 200 px.
BOX_PADDING = 1.2
SPIN_SCALE_PX = 200.0
OPEN_MEAN_PARAMS = OPEN_BODY_DIR / "mean_params.npz"


def upright_orient() -> Tensor:
    """(3,) axis-angle of a half turn about x: a y-up body facing +z, upright and facing an OpenCV camera."""
    return torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64)


def mean_rotations(axis_angle: Tensor) -> Tensor:
    """(J, 3, 3) chordal-L2 mean rotation of each joint over samples axis_angle (N, J, 3)."""
    return project_to_rotation(axis_angle_to_rotmat(axis_angle.double()).mean(0))


def default_mean_params(body: Body, box_padding: float = BOX_PADDING) -> dict[str, np.ndarray]:
    """Mean parameters without data: T-pose, zero betas, upright facing the camera, and the weak
    perspective that centres the posed template in a crop whose side is box_padding x its larger side."""
    pose = torch.zeros(NUM_JOINTS, 3, dtype=torch.float64)
    pose[0] = upright_orient()
    rot = axis_angle_to_rotmat(pose[0])
    template = body.v_template.double()
    root = body.regressors["smpl24"][0].double() @ template
    posed = (template - root) @ rot.T + root  # smplx rotates the body about its root joint
    lo, hi = posed.amin(0), posed.amax(0)
    extent = float((hi - lo)[:2].max())
    centre = (lo + hi)[:2] / 2
    cam = np.array([2.0 / (box_padding * extent), -float(centre[0]), -float(centre[1])])
    return {
        "pose": rotmat_to_rot6d(mean_rotations(pose[None])).reshape(-1).numpy(),
        "shape": np.zeros(NUM_BETAS),
        "cam": cam,
    }


def crop_weak_perspective(
    cam_t: np.ndarray, cam_k: np.ndarray, center: np.ndarray, scale: np.ndarray, box_padding: float = BOX_PADDING
) -> np.ndarray:
    """Weak-perspective cams (N, 3) of SPIN rows in their square crops.

    cam_t (N, 3) metres, cam_k (N, 3, 3) image px, center (N, 2) px, scale (N,) box side / 200 px.
    A crop of side S = box_padding * 200 scale px about `center` maps a point at depth tz to
    ndc = 2 (f (X + T) / tz + c - center) / S, i.e. s = 2 f / (S tz) and t_xy = T_xy + (c - center) tz / f.
    """
    side = box_padding * SPIN_SCALE_PX * scale
    focal = np.stack([cam_k[:, 0, 0], cam_k[:, 1, 1]], -1)
    principal = cam_k[:, :2, 2]
    tz = cam_t[:, 2]
    s = 2.0 * focal[:, 0] / (side * tz)
    txy = cam_t[:, :2] + (principal - center) * tz[:, None] / focal
    return np.concatenate([s[:, None], txy], -1)


def mean_params_from_npz(
    path: str | Path, body: Body | None = None, box_padding: float = BOX_PADDING
) -> dict[str, np.ndarray]:
    """Mean parameters over the rows of a SPIN-format npz that have SMPL parameters (has_smpl, or all
    rows when the field is absent). The camera is averaged over rows with an intrinsic matrix and a
    positive depth; without any, it is the default's (which needs `body`)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n = arrays["pose"].shape[0]
    keep = arrays["has_smpl"].astype(bool) if "has_smpl" in arrays else np.ones(n, dtype=bool)
    if not keep.any():
        raise ValueError(f"{path}: no row has SMPL parameters")
    pose = torch.from_numpy(arrays["pose"][keep].reshape(-1, NUM_JOINTS, 3))
    params = {
        "pose": rotmat_to_rot6d(mean_rotations(pose)).reshape(-1).numpy(),
        "shape": arrays["shape"][keep].astype(np.float64).mean(0),
    }
    has_cam = np.zeros(n, dtype=bool)
    if "cam_K" in arrays and "cam_t" in arrays:
        has_cam = keep & (arrays["cam_K"][:, 0, 0] > 0) & (arrays["cam_t"][:, 2] > 0) & (arrays["scale"] > 0)
    if has_cam.any():
        cams = crop_weak_perspective(
            arrays["cam_t"][has_cam], arrays["cam_K"][has_cam], arrays["center"][has_cam],
            arrays["scale"][has_cam], box_padding,
        )
        params["cam"] = cams.mean(0)
    else:
        if body is None:
            raise ValueError(f"{path}: no row has a camera; pass the body for the default camera")
        params["cam"] = default_mean_params(body, box_padding)["cam"]
    return params


def save_mean_params(params: dict[str, np.ndarray], path: str | Path) -> None:
    np.savez(path, **{k: np.asarray(params[k], dtype=np.float64) for k in KEYS})


def load_mean_params(body: Body, path: str | Path | None = None) -> dict[str, Tensor]:
    """float32 tensors pose (144,), shape (10,), cam (3,) of `body`: from `path`, else the open body's
    committed file (for the open body), else `body.extras['mean_params']`, else the default."""
    if path is None:
        if body.name == "open" and OPEN_MEAN_PARAMS.exists():
            path = OPEN_MEAN_PARAMS
        else:
            path = body.extras.get("mean_params")
    if path is None:
        params = default_mean_params(body)
    else:
        with np.load(path, allow_pickle=False) as data:
            params = {k: data[k] for k in KEYS}
    out = {k: torch.as_tensor(np.asarray(params[k]), dtype=torch.float32).reshape(-1) for k in KEYS}
    sizes = {"pose": NUM_JOINTS * 6, "shape": NUM_BETAS, "cam": 3}
    for k, size in sizes.items():
        if out[k].numel() != size:
            raise ValueError(f"mean parameters {path}: {k} has {out[k].numel()} values, expected {size}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npz", type=Path, default=None, help="SPIN-format training npz (default: none)")
    parser.add_argument("--out", type=Path, default=OPEN_MEAN_PARAMS)
    parser.add_argument("--body", default="open")
    args = parser.parse_args(argv)
    body = load_body(args.body)
    if args.npz is not None:
        params = mean_params_from_npz(args.npz, body)
    else:
        params = default_mean_params(body)
    save_mean_params(params, args.out)
    print(f"wrote {args.out}: cam {np.round(params['cam'], 4).tolist()}, |shape| {np.linalg.norm(params['shape']):.3f}")


if __name__ == "__main__":
    main()
