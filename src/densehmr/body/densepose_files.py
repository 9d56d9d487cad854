"""DensePose's SMPL chart and evaluation files: read them (real data) and write them (open body).

Formats (DensePose's `UV_data/` and `eval_data/`):
- `UV_Processed.mat`: `All_FaceIndices` (F, 1) part 1..24, `All_Faces` (F, 3) 1-based into the
  UV-split vertices, `All_U_norm`, `All_V_norm` (Vs, 1), `All_vertices` (1, Vs) 1-based SMPL vertex.
- `UV_symmetry_transforms.mat`: `U_transforms`, `V_transforms`, (1, 24) cells of 256 x 256 maps
  indexed [round(V * 255), round(U * 255)].
- `SMPL_subdiv.mat`: `U_subdiv`, `V_subdiv` (1, N) float, `Part_ID_subdiv` (1, N) integer part 1..24
  (DensePose's evaluator indexes arrays with it, so a float part id stops it with an IndexError).
- `SMPL_SUBDIV_TRANSFORM.mat`: `index` (1, N) integer, 1-based row of each point in the distance set.
- `Pdist_matrix.mat` (MATLAB v7.3, HDF5: dataset `Pdist_matrix` (n(n-1)/2, 1); DensePose's and
  MeshPose's evaluators read it) or `Pdist_matrix.pkl` (pickle of {"Pdist_matrix": (n(n-1)/2, 1)};
  detectron2's evaluator reads it): condensed pairwise geodesic distances, metres.

Condensed order: DensePose's evaluator (`getDistancesUV`) reads points i > j (0-based) at
N - 1 - pdist_index(n - 1 - i, n - 1 - j), with N = n(n-1)/2 and pdist_index scipy's row-major
upper-triangle index; that simplifies to i(i-1)/2 + j, the order `GeodesicEval` uses, so the real
file is read as is, no reordering.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

from densehmr.body.assets import COARSE_PARTS, Charts, GeodesicEval
from densehmr.body.iuv_mapping import IUVMapper

# DensePose's geodesic normalizers for SMPL per coarse part (its current COCO evaluator), metres.
DENSEPOSE_SMPL_MEAN_GEODESIC = (0.0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150)

SUBDIV_FILE = "SMPL_subdiv.mat"
TRANSFORM_FILE = "SMPL_SUBDIV_TRANSFORM.mat"
PDIST_MAT_FILE = "Pdist_matrix.mat"
PDIST_PKL_FILE = "Pdist_matrix.pkl"
PARAMS_FILE = "eval_params.json"


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _write_mat73(path: Path, name: str, data: np.ndarray) -> None:
    """One numeric array in a MATLAB v7.3 file: HDF5 with MATLAB's 128-byte header in a 512-byte userblock."""
    matlab_class = {np.dtype(np.float32): "single", np.dtype(np.float64): "double"}[data.dtype]
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        ds = f.create_dataset(name, data=data, compression="gzip", shuffle=True)
        ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: densehmr HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def write_eval_data(
    out_dir: str | Path,
    point_part,
    point_u,
    point_v,
    pdist_condensed,
    mean_geodesic,
    coarse_parts,
) -> None:
    """Write evaluation data in DensePose's layout (identity SMPL_SUBDIV_TRANSFORM, the distances both as
    .mat and .pkl) plus eval_params.json, with the dtypes DensePose's evaluators run on unchanged.

    point_part (N,) 1..24, point_u, point_v (N,), pdist_condensed (N(N-1)/2,) metres in the
    GeodesicEval order, mean_geodesic (9,) metres, coarse_parts (25,).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    part = _numpy(point_part).reshape(1, -1)
    if not np.array_equal(part, np.round(part)):
        raise ValueError("point_part must hold whole part numbers 1..24")
    part = part.astype(np.int32)
    n = part.shape[1]
    pdist = _numpy(pdist_condensed).astype(np.float32).reshape(-1, 1)
    if len(pdist) != n * (n - 1) // 2:
        raise ValueError(f"pdist has {len(pdist)} entries, expected {n * (n - 1) // 2} for {n} points")
    subdiv = {
        "U_subdiv": _numpy(point_u).astype(np.float64).reshape(1, -1),
        "V_subdiv": _numpy(point_v).astype(np.float64).reshape(1, -1),
        "Part_ID_subdiv": part,
    }
    scipy.io.savemat(out / SUBDIV_FILE, subdiv)
    scipy.io.savemat(out / TRANSFORM_FILE, {"index": np.arange(1, n + 1, dtype=np.int32).reshape(1, -1)})
    _write_mat73(out / PDIST_MAT_FILE, "Pdist_matrix", pdist)
    with open(out / PDIST_PKL_FILE, "wb") as f:
        pickle.dump({"Pdist_matrix": pdist}, f, protocol=4)
    params = {
        "mean_geodesic_distances": [float(x) for x in _numpy(mean_geodesic).reshape(-1)],
        "coarse_parts": [int(x) for x in _numpy(coarse_parts).reshape(-1)],
    }
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")


def read_pdist(folder: str | Path) -> np.ndarray:
    """Condensed distances (n(n-1)/2,) float32 from Pdist_matrix.mat (HDF5) or Pdist_matrix.pkl."""
    folder = Path(folder)
    if (folder / PDIST_MAT_FILE).exists():
        with h5py.File(folder / PDIST_MAT_FILE, "r") as f:
            data = f["Pdist_matrix"][...]
    elif (folder / PDIST_PKL_FILE).exists():
        with open(folder / PDIST_PKL_FILE, "rb") as f:
            data = pickle.load(f, encoding="latin1")["Pdist_matrix"]
    else:
        raise FileNotFoundError(f"no {PDIST_MAT_FILE} or {PDIST_PKL_FILE} in {folder}")
    return np.asarray(data, dtype=np.float32).reshape(-1)


def read_eval_data(folder: str | Path, charts: Charts | None = None) -> GeodesicEval:
    """DensePose evaluation data from a folder (DensePose's real files or `write_eval_data`'s).

    mean_geodesic / coarse_parts come from eval_params.json when present, else DensePose's SMPL values.
    point_face / point_bary are found from each point's (I, U, V) on `charts` when given (the charts of
    the mesh the points live on); otherwise they are unknown: face -1, barycentrics 0.
    """
    folder = Path(folder)
    subdiv = scipy.io.loadmat(folder / SUBDIV_FILE)
    part = torch.as_tensor(np.asarray(subdiv["Part_ID_subdiv"]).reshape(-1).astype(np.int64))
    uv = torch.as_tensor(
        np.stack([np.asarray(subdiv["U_subdiv"]).reshape(-1), np.asarray(subdiv["V_subdiv"]).reshape(-1)], 1),
        dtype=torch.float32,
    )
    index = np.asarray(scipy.io.loadmat(folder / TRANSFORM_FILE)["index"]).reshape(-1).astype(np.int64)
    pdist = read_pdist(folder)
    n = int(round((1 + np.sqrt(1 + 8 * len(pdist))) / 2))
    if n * (n - 1) // 2 != len(pdist):
        raise ValueError(f"Pdist_matrix length {len(pdist)} is not n(n-1)/2")
    if index.min() < 1 or index.max() > n:
        raise ValueError(f"SMPL_SUBDIV_TRANSFORM index outside 1..{n}")

    mean_geodesic, coarse = DENSEPOSE_SMPL_MEAN_GEODESIC, COARSE_PARTS
    if (folder / PARAMS_FILE).exists():
        params = json.loads((folder / PARAMS_FILE).read_text())
        mean_geodesic, coarse = params["mean_geodesic_distances"], params["coarse_parts"]

    if charts is not None:
        face, bary = IUVMapper(charts).to_face_bary(part, uv[:, 0], uv[:, 1])
        face, bary = face.cpu(), bary.cpu().float()
    else:
        face = torch.full((len(part),), -1, dtype=torch.long)
        bary = torch.zeros(len(part), 3)
    return GeodesicEval(
        point_part=part,
        point_uv=uv,
        point_face=face,
        point_bary=bary,
        pdist=torch.from_numpy(pdist),
        transform=torch.as_tensor(index - 1),
        mean_geodesic=torch.tensor(mean_geodesic, dtype=torch.float32),
        coarse_parts=torch.tensor(coarse, dtype=torch.long),
    )


def read_uv_processed(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DensePose's SMPL charts from UV_Processed.mat.

    Returns faces (F, 3) int64 into the SMPL vertices (0-based), face_part (F,) int64 1..24 and
    face_uv (F, 3, 2) float32 per-corner (U_norm, V_norm) as stored (no axis flip).
    """
    uvp = scipy.io.loadmat(path)
    split_faces = np.asarray(uvp["All_Faces"]).astype(np.int64) - 1
    smpl_vertex = np.asarray(uvp["All_vertices"]).reshape(-1).astype(np.int64) - 1
    u = np.asarray(uvp["All_U_norm"], dtype=np.float64).reshape(-1)
    v = np.asarray(uvp["All_V_norm"], dtype=np.float64).reshape(-1)
    face_part = np.asarray(uvp["All_FaceIndices"]).reshape(-1).astype(np.int64)
    face_uv = np.stack([u[split_faces], v[split_faces]], -1).astype(np.float32)
    return smpl_vertex[split_faces], face_part, face_uv


def read_uv_symmetry(path: str | Path) -> np.ndarray:
    """DensePose's UV flip table (24, 256, 256, 2) float32 from UV_symmetry_transforms.mat."""
    mat = scipy.io.loadmat(path)
    u_maps, v_maps = np.asarray(mat["U_transforms"]).reshape(-1), np.asarray(mat["V_transforms"]).reshape(-1)
    return np.stack(
        [
            np.stack([np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32)], -1)
            for u, v in zip(u_maps, v_maps, strict=True)
        ]
    )
