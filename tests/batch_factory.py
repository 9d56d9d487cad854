"""A collated training batch made by posing the body and rendering it, for method and metric tests.

`make_batch(body, n, size, seed)` returns every key of the batch contract (docs/architecture.md,
"Batch keys"; datamodules/collate.py); the GT mesh is a method's target (`BaseMethod.targets`).
Everything is consistent by construction: the DensePose points, masks, keypoints and 3D joints are
those of the rendered posed body, seen by the perspective camera `cam_K` at translation `cam_t`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from densehmr.body.assets import FINE_TO_MASK14, Body
from densehmr.body.iuv_mapping import IUVMapper
from densehmr.body.smpl_layout import make_smplx
from densehmr.render import PerspectiveCamera, rasterize, render_iuv
from densehmr.viz.iuv import IMAGENET_MEAN, IMAGENET_STD, iuv_to_colour

POINTS_PER_SAMPLE = 50
# Fraction of the crop the body's larger side fills (a box padded by 1.2, as the crops are).
FILL = 0.8
BETA_STD = 0.5
POSE_STD = 0.15  # rad per axis-angle component: mild poses around an A-pose
# The A-pose: shoulders (SMPL joints 16 left, 17 right) lower the arms by this angle about z.
ARMS_DOWN = math.radians(55.0)
MAX_YAW = math.radians(30.0)
FOCAL_PER_PX = 2.0  # focal length in units of the crop's larger side (about 28 degrees field of view)
NOISE_STD = 0.02

# Per body (by identity; the body is kept so its id cannot be reused): IUV mappers and the body model.
_cache: dict[int, tuple[Body, tuple[IUVMapper, IUVMapper], object]] = {}


def _assets(body: Body) -> tuple[tuple[IUVMapper, IUVMapper], object]:
    if id(body) not in _cache:
        mappers = (IUVMapper(body.charts), IUVMapper(body.lowpoly.charts))
        _cache[id(body)] = (body, mappers, make_smplx(body.model_file, body.vertex_ids))
    _, mappers, smpl = _cache[id(body)]
    return mappers, smpl


def facing_camera_orient(yaw: Tensor) -> Tensor:
    """Axis-angle (B, 3) of R_x(pi) R_y(yaw): the body (y up, facing +z) turned by yaw, then into
    OpenCV's camera frame (y down, z forward) facing the camera. Its quaternion is
    (0, cos(yaw/2), 0, sin(yaw/2)): a half turn about (cos(yaw/2), 0, sin(yaw/2))."""
    return math.pi * torch.stack([torch.cos(yaw / 2), torch.zeros_like(yaw), torch.sin(yaw / 2)], -1)


def a_pose(n: int) -> Tensor:
    """(n, 69) body pose with the arms lowered from the T-pose (SMPL's left arm lies along +x)."""
    pose = torch.zeros(n, 23, 3)
    pose[:, 15, 2] = -ARMS_DOWN
    pose[:, 16, 2] = ARMS_DOWN
    return pose.reshape(n, 69)


def _place(verts: Tensor, focal: float, size: tuple[int, int]) -> Tensor:
    """Translation (B, 3) metres putting posed bodies verts (B, V, 3) in front of the camera, centred,
    their larger projected side about FILL of the crop."""
    h, w = size
    lo, hi = verts.amin(1), verts.amax(1)
    extent = hi - lo
    # The nearest surface sits at the depth where the body's extent spans FILL of the crop.
    near = focal * torch.maximum(extent[:, 0] / (FILL * w), extent[:, 1] / (FILL * h))
    t = torch.stack([-(lo[:, 0] + hi[:, 0]) / 2, -(lo[:, 1] + hi[:, 1]) / 2, near - lo[:, 2]], -1)
    target = FILL * torch.tensor([w, h], dtype=verts.dtype)
    # The nearest surface overestimates the projected size: rescale the distance, then recentre.
    for _ in range(2):
        cam = verts + t[:, None]
        px = focal * cam[..., :2] / cam[..., 2:3]
        depth = cam[..., 2].mean(1)
        ratio = ((px.amax(1) - px.amin(1)) / target).amax(1)
        t[:, 2] += depth * (ratio - 1)
        t[:, :2] -= (px.amin(1) + px.amax(1)) / 2 * (depth * ratio)[:, None] / focal
    return t


def _shade(verts: Tensor, faces: Tensor, face_idx: Tensor) -> Tensor:
    """(B, H, W) Lambertian-like factor in [0.5, 1] from each pixel's face normal (two-sided)."""
    tri = verts[:, faces]  # (B, F, 3, 3)
    normal = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    facing = normal[..., 2].abs() / normal.norm(dim=-1).clamp(min=1e-12)  # (B, F)
    per_pixel = torch.gather(facing, 1, face_idx.clamp(min=0).flatten(1)).view_as(face_idx)
    return 0.5 + 0.5 * per_pixel


def _sample_points(part: Tensor, gen: torch.Generator, count: int) -> tuple[Tensor, Tensor]:
    """Flat pixel indices (B, count) of distinct foreground pixels drawn uniformly, and their validity
    (False for padding where a sample has fewer foreground pixels)."""
    fg = (part > 0).flatten(1)
    score = torch.rand(fg.shape, generator=gen)
    score = torch.where(fg, score, torch.full_like(score, -1.0))
    top, idx = score.topk(min(count, fg.shape[1]), dim=1)
    return idx, top >= 0


def make_batch(body: Body, n: int = 16, size: tuple[int, int] = (64, 64), seed: int = 0) -> dict:
    """A batch of n rendered people in (H, W) crops, deterministic from seed (CPU tensors)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    betas = torch.randn(n, 10, generator=gen) * BETA_STD
    body_pose = a_pose(n) + torch.randn(n, 69, generator=gen) * POSE_STD
    yaw = (torch.rand(n, generator=gen) * 2 - 1) * MAX_YAW
    global_orient = facing_camera_orient(yaw)

    (full, low), smpl = _assets(body)
    with torch.no_grad():
        posed = smpl(
            betas=betas, body_pose=body_pose, global_orient=global_orient, transl=torch.zeros(n, 3)
        ).vertices
    focal = FOCAL_PER_PX * max(h, w)
    cam_t = _place(posed, focal, size)
    verts = posed + cam_t[:, None]
    camera = PerspectiveCamera(torch.full((n, 2), focal), torch.tensor([[w / 2, h / 2]]).expand(n, 2))
    cam_K = torch.zeros(n, 3, 3)
    cam_K[:, 0, 0] = cam_K[:, 1, 1] = focal
    cam_K[:, :2, 2] = camera.principal
    cam_K[:, 2, 2] = 1.0

    faces = body.faces
    fragments = rasterize(camera.to_screen(verts), faces, size, perspective_correct=True)
    part, u, v = render_iuv(fragments, body.charts)
    mask = (part > 0).float()

    iuv = torch.stack([part.float(), u, v], 1)
    colour = iuv_to_colour(iuv) * _shade(verts, faces, fragments.face_idx)[:, None]
    colour = torch.where(mask[:, None] > 0, colour, torch.full_like(colour, 0.45))
    colour = (colour + torch.randn(colour.shape, generator=gen) * NOISE_STD).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    image = (colour - mean) / std

    pix, picked = _sample_points(part, gen, POINTS_PER_SAMPLE)
    dp_xy = torch.stack([pix % w + 0.5, pix // w + 0.5], -1).float()
    dp_I = torch.where(picked, part.flatten(1).gather(1, pix), 0)
    dp_U = torch.where(picked, u.flatten(1).gather(1, pix), 0.0)
    dp_V = torch.where(picked, v.flatten(1).gather(1, pix), 0.0)
    dp_face, dp_bary = full.to_face_bary(dp_I, dp_U, dp_V)
    dp_face_low, dp_bary_low = low.to_face_bary(dp_I, dp_U, dp_V)
    dp_valid = picked & (dp_face >= 0) & (dp_face_low >= 0)

    kp2d = torch.zeros(n, 17, 3)
    kp2d[..., :2] = camera.project(body.regressors["coco17"] @ verts)
    inside = (kp2d[..., 0] >= 0) & (kp2d[..., 0] < w) & (kp2d[..., 1] >= 0) & (kp2d[..., 1] < h)
    kp2d[..., 2] = torch.where(inside, 2.0, 0.0)
    kp3d = torch.cat([body.regressors["h36m17"] @ verts, torch.ones(n, 17, 1)], -1)

    rows, cols = mask.any(2), mask.any(1)
    first_row, first_col = rows.float().argmax(1), cols.float().argmax(1)
    last_row = h - 1 - rows.flip(1).float().argmax(1)
    last_col = w - 1 - cols.flip(1).float().argmax(1)
    bbox = torch.stack([first_col, first_row, last_col + 1 - first_col, last_row + 1 - first_row], -1).float()

    yes = torch.ones(n, dtype=torch.bool)
    return {
        "image": image.float(),
        "mask": mask,
        "mask_parts": torch.tensor(FINE_TO_MASK14)[part],
        "dp_xy": dp_xy,
        "dp_I": dp_I.long(),
        "dp_U": dp_U.float(),
        "dp_V": dp_V.float(),
        "dp_valid": dp_valid,
        "dp_face": torch.where(dp_valid, dp_face, 0),
        "dp_bary": dp_bary,
        "dp_face_low": torch.where(dp_valid, dp_face_low, 0),
        "dp_bary_low": dp_bary_low,
        "kp2d": kp2d,
        "kp3d": kp3d,
        "global_orient": global_orient,
        "body_pose": body_pose,
        "betas": betas,
        "cam_K": cam_K,
        "cam_t": cam_t,
        "bbox": bbox,
        "area": mask.sum((1, 2)),
        "affine": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(n, 2, 3).clone(),
        "image_id": torch.arange(n),
        "ann_id": torch.arange(n),
        "has_dp": dp_valid.any(1),
        "has_kp2d": yes.clone(),
        "has_kp3d": yes.clone(),
        "has_smpl": yes.clone(),
        "has_mask": yes.clone(),
        "has_mask_parts": yes.clone(),
        "has_cam": yes.clone(),
    }
