"""A user's SMPL with DensePose's files, behind the same `Body` interface as the open body.

Inputs (paths from `configs/body/smpl.yaml`; nothing is downloaded):
- `model_file`: SMPL_NEUTRAL.pkl as distributed (its arrays are often chumpy objects and its
  J_regressor a scipy sparse matrix; we read both without chumpy and cache a plain-numpy copy);
- `uv_processed`: DensePose's UV_Processed.mat (charts); `uv_symmetry`: UV_symmetry_transforms.mat;
- `eval_data`: folder with SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl|.mat;
- `h36m_regressor`: J_regressor_h36m.npy (17, V), SPIN's, whose rows list the left leg before the
  right: reordered to ours on load, so its joints match 3D joints read from the datasets' files;
- `model_file_male`, `model_file_female` (optional): SMPL_MALE.pkl / SMPL_FEMALE.pkl, for GT meshes of
  datasets that give a gender (3DPW);
- `lowpoly`: a low-poly mesh npz in densehmr's layout (keys low_faces, low_face_part, low_face_uv,
  low_full_face, low_full_bary, low_mirror, up_idx, up_w), needed by MeshPose.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from densehmr.body.assets import Body, Charts, LowPoly
from densehmr.body.densepose_files import read_eval_data, read_uv_processed, read_uv_symmetry
from densehmr.body.lowpoly import dense_upsampler
from densehmr.body.mesh_utils import farthest_point_sampling, mirror_map
from densehmr.body.smpl_layout import cached_model_file

# smplx's own SMPL vertex ids for the face keypoints (SMPL topology).
SMPL_FACE_VERTEX_IDS = {"nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583}
# COCO-17 body keypoints as SMPL joints (shoulders, elbows, wrists, hips, knees, ankles).
_COCO_FROM_SMPL = {5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21, 11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8}
_COCO_FACE = {0: "nose", 1: "leye", 2: "reye", 3: "lear", 4: "rear"}
# Our H36M-17 order (right leg first) from SPIN's (left leg first): ours[i] = SPIN's[H36M17_FROM_SPIN_H36M17[i]].
H36M17_FROM_SPIN_H36M17 = np.array([0, 4, 5, 6, 1, 2, 3, *range(7, 17)], dtype=np.int64)
SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class _ChumpyArray:
    """Stand-in for chumpy objects while unpickling: keeps the state, whose `x` is the value."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"x": state})

    def value(self) -> np.ndarray:
        return np.asarray(self.__dict__["x"])


class _SmplUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("chumpy"):
            return _ChumpyArray
        return super().find_class(module, name)


def read_smpl_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """SMPL's arrays as plain numpy from an official (chumpy) or plain SMPL .pkl file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file not found: {path}")
    with open(path, "rb") as fh:
        raw = _SmplUnpickler(fh, encoding="latin1").load()
    missing = [k for k in SMPL_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: not an SMPL model file, missing {missing}")
    out = {}
    for key in SMPL_KEYS:
        value = raw[key]
        if isinstance(value, _ChumpyArray):
            value = value.value()
        elif hasattr(value, "toarray"):
            value = value.toarray()
        out[key] = np.asarray(value)
    return out


def load_smpl_body(
    model_file: str, uv_processed: str, uv_symmetry: str, eval_data: str, lowpoly: str,
    h36m_regressor: str, directory: str | None = None, model_file_male: str | None = None,
    model_file_female: str | None = None,
) -> Body:
    from densehmr.body.loader import cache_dir

    smpl = read_smpl_pickle(model_file)
    model_path = cached_model_file(smpl, cache_dir() / "bodies", "smpl")
    gendered = {}
    if model_file_male and model_file_female:
        gendered["gendered_model_files"] = {
            key: cached_model_file(read_smpl_pickle(path), cache_dir() / "bodies", f"smpl_{key}")
            for key, path in (("male", model_file_male), ("female", model_file_female))
        }
    template = smpl["v_template"].astype(np.float32)
    j_reg = smpl["J_regressor"].astype(np.float32)
    faces, face_part, face_uv = read_uv_processed(uv_processed)
    charts = Charts(torch.as_tensor(faces), torch.as_tensor(face_part), torch.as_tensor(face_uv))

    coco = np.zeros((17, len(template)), dtype=np.float32)
    for c, j in _COCO_FROM_SMPL.items():
        coco[c] = j_reg[j]
    for c, name in _COCO_FACE.items():
        coco[c, SMPL_FACE_VERTEX_IDS[name]] = 1.0
    regressors = {
        "smpl24": torch.as_tensor(j_reg),
        "h36m17": torch.as_tensor(np.load(h36m_regressor)[H36M17_FROM_SPIN_H36M17].astype(np.float32)),
        "coco17": torch.as_tensor(coco),
    }
    low = np.load(lowpoly)
    upsampler = dense_upsampler(low["up_idx"].astype(np.int64), low["up_w"], len(low["low_full_face"]))
    low_body = LowPoly(
        charts=Charts(*(torch.as_tensor(low[k].astype(np.int64 if k != "low_face_uv" else np.float32))
                        for k in ("low_faces", "low_face_part", "low_face_uv"))),
        full_face=torch.as_tensor(low["low_full_face"].astype(np.int64)),
        full_bary=torch.as_tensor(low["low_full_bary"].astype(np.float32)),
        upsampler=upsampler,
        mirror=torch.as_tensor(low["low_mirror"].astype(np.int64)),
        landmarkers={k: regressors[k] @ upsampler for k in ("coco17", "h36m17")},
    )
    mirror, _ = mirror_map(template.astype(np.float64))
    level1 = farthest_point_sampling(template, len(template) // 4)
    level2 = level1[farthest_point_sampling(template[level1], len(template) // 16)]
    parents = smpl["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    return Body(
        name="smpl",
        model_file=model_path,
        vertex_ids=_smplx_vertex_ids(),
        v_template=torch.as_tensor(template),
        charts=charts,
        parents=torch.as_tensor(parents),
        regressors=regressors,
        mirror=torch.as_tensor(mirror),
        uv_symmetry=torch.as_tensor(read_uv_symmetry(uv_symmetry)),
        lowpoly=low_body,
        downsample=[torch.as_tensor(level1), torch.as_tensor(level2)],
        geodesic=read_eval_data(eval_data),
        extras={"weights": torch.as_tensor(smpl["weights"].astype(np.float32)), **gendered},
    )


def _smplx_vertex_ids() -> dict[str, int]:
    from smplx.vertex_ids import vertex_ids

    return dict(vertex_ids["smplh"])
