"""Cameras for samples whose files give 2D keypoints and a 3D body but no camera (every real SPIN/EFT file).

As SPIN's trainer does: a perspective camera with a fixed focal length of 5000 px for a 224-px crop of
SPIN's box (`scale` x 200 px about `center`), principal point at the box centre, and the body's
translation that best explains the 2D keypoints in weighted least squares. The camera is expressed in
image pixels, so the crop and augmentation move it like any camera a file gives (`transform_scene`).

The fit is linear: for a joint X + t projecting to (u, v), f (X + tx) = (u - cx)(Z + tz) and likewise
for y; each joint's two equations are weighted by the square root of its confidence (SPIN's choice).
"""

from __future__ import annotations

import numpy as np
import torch

from densehmr.body.assets import Body

FOCAL_LENGTH = 5000.0  # px, for a crop of CROP_RESOLUTION px (SPIN's constants)
CROP_RESOLUTION = 224
BOX_PIXELS_PER_SCALE = 200.0  # SPIN's `scale` is the box side / 200
# Fewer visible joints leave the translation ill-determined (3 unknowns; 2 joints fit anything
# up to depth noise): such samples get no camera.
MIN_FIT_JOINTS = 4


def spin_camera(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N, 3, 3) image-px intrinsics of SPIN's crop camera for rows with center (N, 2) px, scale (N,)."""
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    focal = FOCAL_LENGTH * BOX_PIXELS_PER_SCALE * np.asarray(scale, dtype=np.float64).reshape(-1) / CROP_RESOLUTION
    k = np.zeros((len(center), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, :2, 2] = center
    k[:, 2, 2] = 1.0
    return k


def fit_translation(
    points: np.ndarray, keypoints: np.ndarray, weights: np.ndarray, cam_k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares translations (N, 3) metres of 3D points (N, J, 3) onto 2D keypoints (N, J, 2) px
    under intrinsics cam_k (N, 3, 3), with per-joint weights (N, J) >= 0; and (N,) bool where the fit
    is determined (at least MIN_FIT_JOINTS weighted joints) and puts the body in front of the camera."""
    points = np.asarray(points, dtype=np.float64)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    n, j = points.shape[:2]
    focal = np.stack([cam_k[:, 0, 0], cam_k[:, 1, 1]], -1)[:, None]  # (N, 1, 2)
    offset = keypoints - cam_k[:, None, :2, 2]  # (N, J, 2): u - cx, v - cy
    # Equation per joint and axis a: f_a t_a - offset_a tz = offset_a Z - f_a X_a.
    rows = np.zeros((n, j, 2, 3))
    rows[..., 0, 0] = focal[..., 0]
    rows[..., 1, 1] = focal[..., 1]
    rows[..., 2] = -offset
    rhs = offset * points[..., 2:3] - focal * points[..., :2]
    sw = np.sqrt(w)[..., None, None]
    a = (sw * rows).reshape(n, 2 * j, 3)
    b = (sw[..., 0] * rhs).reshape(n, 2 * j)
    ok = (w > 0).sum(1) >= MIN_FIT_JOINTS
    normal = a.transpose(0, 2, 1) @ a
    normal[~ok] = np.eye(3)
    ok &= np.linalg.cond(normal) < 1e12
    normal[~ok] = np.eye(3)
    t = np.linalg.solve(normal, (a.transpose(0, 2, 1) @ b[..., None]))[..., 0]
    ok &= np.isfinite(t).all(1) & (t[:, 2] > 0)
    return np.where(ok[:, None], t, 0.0), ok


class BodyCameraFit:
    """Fits the translation of a body given by SMPL-format parameters to its COCO-17 keypoints.

    The body's COCO-17 joints come from its vertex regressor, as the methods' own 2D joints do; its H36M
    pelvis places 3D joints given relative to the pelvis.
    """

    def __init__(self, body: Body) -> None:
        from densehmr.body.smpl_layout import make_smplx

        self.model = make_smplx(body.model_file, body.vertex_ids)
        self.coco17 = body.regressors["coco17"].double()
        self.pelvis = body.regressors["h36m17"][0].double()

    def joints(self, pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """COCO-17 joints (17, 3) and the H36M pelvis (3,), float64 metres, of the body (pose (72,),
        betas (10,)) at the origin."""
        with torch.no_grad():
            out = self.model(
                betas=torch.as_tensor(betas, dtype=torch.float32)[None, :10],
                body_pose=torch.as_tensor(pose[3:], dtype=torch.float32)[None],
                global_orient=torch.as_tensor(pose[:3], dtype=torch.float32)[None],
            )
        verts = out.vertices[0].double()
        return (self.coco17 @ verts).numpy(), (self.pelvis @ verts).numpy()

    def __call__(
        self, pose: np.ndarray, betas: np.ndarray, keypoints: np.ndarray, cam_k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The translation (3,) metres putting the body onto keypoints (17, 3) image px + visibility under
        cam_k (3, 3), and where that puts its H36M pelvis (3,) (camera frame); None where too few
        keypoints are visible."""
        coco17, pelvis = self.joints(pose, betas)
        t, ok = fit_translation(coco17[None], keypoints[None, :, :2], (keypoints[None, :, 2] > 0), cam_k[None])
        return (t[0], pelvis + t[0]) if ok[0] else None
