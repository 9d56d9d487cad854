"""The SMPL file layout: the pickled dict of plain numpy arrays that `smplx.SMPL` loads."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

from densehmr.files import atomic_write_bytes

NUM_POSE_BASIS = 207  # 23 joints x 9 rotation-matrix entries


def smpl_dict(
    v_template: np.ndarray, shapedirs: np.ndarray, j_regressor: np.ndarray, weights: np.ndarray,
    parents: np.ndarray, faces: np.ndarray,
) -> dict[str, np.ndarray]:
    """SMPL's keys: v_template (V,3), shapedirs (V,3,B), posedirs (V,3,207) zeros, J_regressor (24,V),
    weights (V,24), kintree_table (2,24) with the root's parent as uint32 -1, f (F,3)."""
    v = v_template.shape[0]
    kintree = np.stack([np.asarray(parents, dtype=np.int64), np.arange(len(parents))]).astype(np.uint32)
    return {
        "v_template": v_template.astype(np.float64),
        "shapedirs": shapedirs.astype(np.float64),
        "posedirs": np.zeros((v, 3, NUM_POSE_BASIS)),
        "J_regressor": j_regressor.astype(np.float64),
        "weights": weights.astype(np.float64),
        "kintree_table": kintree,
        "f": faces.astype(np.int64),
    }


def cached_model_file(data: dict[str, np.ndarray], cache_dir: Path, stem: str) -> Path:
    """The SMPL-layout pickle for `data` in `cache_dir`, written once (content-addressed)."""
    payload = pickle.dumps(data, protocol=4)
    path = cache_dir / f"{stem}-{hashlib.sha256(payload).hexdigest()[:12]}.pkl"
    if not path.exists():
        atomic_write_bytes(path, payload)
    return path


def make_smplx(model_file: Path, vertex_ids: dict[str, int], num_betas: int = 10, batch_size: int = 1):
    """An `smplx.SMPL` module for a body file (extra joints from our own vertex ids)."""
    import smplx

    return smplx.SMPL(
        model_path=str(model_file), vertex_ids=vertex_ids, num_betas=num_betas, batch_size=batch_size,
    )
