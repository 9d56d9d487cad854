"""`load_body(name)`: the open body (committed files) or a user's SMPL with DensePose's files."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from densehmr.body.assets import COARSE_PARTS, Body, Charts, GeodesicEval, LowPoly
from densehmr.body.lowpoly import dense_upsampler
from densehmr.body.smpl_layout import cached_model_file, smpl_dict

OPEN_BODY_DIR = Path(__file__).parent / "data" / "open"


def cache_dir() -> Path:
    return Path(os.environ.get("DENSEHMR_CACHE", Path.home() / ".cache" / "densehmr"))


def load_body(name: str = "open", **paths: str) -> Body:
    """The body called `name`: "open" (default, committed) or "smpl" (paths from config:
    model_file, uv_processed, uv_symmetry, eval_data, lowpoly, h36m_regressor, coco_regressor)."""
    if name == "open":
        return _load_open(str(paths.get("directory", OPEN_BODY_DIR)))
    if name == "smpl":
        from densehmr.body.smpl_body import load_smpl_body

        return load_smpl_body(**paths)
    raise ValueError(f"unknown body {name!r}: expected 'open' or 'smpl'")


def _t(x: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype) if dtype is not None else t


@lru_cache(maxsize=4)
def _load_open(directory: str) -> Body:
    directory = Path(directory)
    npz_path = directory / "open_body.npz"
    if not npz_path.exists():
        raise FileNotFoundError(f"{npz_path} is missing: rebuild the open body with `make body`")
    a = dict(np.load(npz_path))
    meta = json.loads((directory / "meta.json").read_text())
    vertex_ids = {k: int(v) for k, v in meta["vertex_ids"].items()}
    faces = a["faces"].astype(np.int64)
    model_file = cached_model_file(
        smpl_dict(a["v_template"], a["shapedirs"], a["J_regressor"], a["weights"], a["parents"], faces),
        cache_dir() / "bodies",
        "open_body",
    )
    charts = Charts(_t(faces), _t(a["face_part"], torch.long), _t(a["face_uv"]))
    num_low = len(a["low_full_face"])
    upsampler = dense_upsampler(a["up_idx"].astype(np.int64), a["up_w"], num_low)
    regressors = {
        "smpl24": _t(a["J_regressor"]),
        "h36m17": _t(a["reg_h36m17"]),
        "coco17": _t(a["reg_coco17"]),
    }
    lowpoly = LowPoly(
        charts=Charts(_t(a["low_faces"], torch.long), _t(a["low_face_part"], torch.long), _t(a["low_face_uv"])),
        full_face=_t(a["low_full_face"], torch.long),
        full_bary=_t(a["low_full_bary"]),
        upsampler=upsampler,
        mirror=_t(a["low_mirror"], torch.long),
        landmarkers={k: regressors[k] @ upsampler for k in ("coco17", "h36m17")},
    )
    n = len(a["eval_part"])
    geodesic = GeodesicEval(
        point_part=_t(a["eval_part"], torch.long),
        point_uv=_t(a["eval_uv"]),
        point_face=_t(a["eval_face"], torch.long),
        point_bary=_t(a["eval_bary"]),
        pdist=_t(a["eval_pdist_mm"].astype(np.float32) / 1000.0),
        transform=torch.arange(n),
        mean_geodesic=_t(a["eval_kappa"]),
        coarse_parts=torch.tensor(COARSE_PARTS, dtype=torch.long),
    )
    return Body(
        name="open",
        model_file=model_file,
        vertex_ids=vertex_ids,
        v_template=_t(a["v_template"]),
        charts=charts,
        parents=_t(a["parents"], torch.long),
        regressors=regressors,
        mirror=_t(a["mirror"], torch.long),
        uv_symmetry=_t(a["uv_symmetry"]).float() / 255.0,
        lowpoly=lowpoly,
        downsample=[_t(a["down_level1"], torch.long), _t(a["down_level2"], torch.long)],
        geodesic=geodesic,
        extras={"stats": meta["stats"], "shapedirs": _t(a["shapedirs"]), "weights": _t(a["weights"])},
    )
