"""load_body("smpl"): the readers for SMPL's and DensePose's files, on fixtures written in their exact
formats (chumpy-pickled SMPL, 1-based MATLAB indices, HDF5 .mat), here carrying the open body's data."""

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from densehmr.body import load_body
from densehmr.body.densepose_files import write_eval_data
from densehmr.body.smpl_body import H36M17_FROM_SPIN_H36M17
from densehmr.body.smpl_layout import make_smplx


class Ch:
    """Pickles like a chumpy array (chumpy.ch.Ch): its state dict holds the value under 'x'."""

    def __init__(self, x):
        self.x = x


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory, body):
    root = tmp_path_factory.mktemp("smpl")
    extras = body.extras
    fake = types.ModuleType("chumpy.ch")
    Ch.__module__ = "chumpy.ch"
    fake.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), fake
    try:
        v = body.num_vertices
        data = {
            "v_template": Ch(body.v_template.double().numpy()),
            "shapedirs": Ch(extras["shapedirs"].double().numpy()),
            "posedirs": Ch(np.zeros((v, 3, 207))),
            "J_regressor": scipy.sparse.csc_matrix(body.regressors["smpl24"].double().numpy()),
            "weights": Ch(extras["weights"].double().numpy()),
            "kintree_table": np.stack([np.r_[4294967295, body.parents[1:].numpy()], np.arange(24)]),
            "f": body.faces.numpy().astype(np.uint32),
            "bs_style": "lbs",
        }
        (root / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(data, protocol=2))
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    # UV_Processed.mat: one UV-split vertex per face corner, 1-based everywhere.
    faces = body.faces.numpy()
    f = len(faces)
    uv = body.charts.face_uv.numpy().reshape(-1, 2)
    scipy.io.savemat(root / "UV_Processed.mat", {
        "All_FaceIndices": body.charts.face_part.numpy().reshape(-1, 1).astype(np.float64),
        "All_Faces": (np.arange(3 * f).reshape(f, 3) + 1).astype(np.float64),
        "All_U_norm": uv[:, :1].astype(np.float64),
        "All_V_norm": uv[:, 1:].astype(np.float64),
        "All_vertices": (faces.reshape(1, -1) + 1).astype(np.float64),
    })
    cells_u = np.empty((1, 24), dtype=object)
    cells_v = np.empty((1, 24), dtype=object)
    for p in range(24):
        cells_u[0, p] = body.uv_symmetry[p, ..., 0].double().numpy()
        cells_v[0, p] = body.uv_symmetry[p, ..., 1].double().numpy()
    scipy.io.savemat(root / "UV_symmetry_transforms.mat", {"U_transforms": cells_u, "V_transforms": cells_v})
    g = body.geodesic
    write_eval_data(root / "eval", g.point_part.numpy(), g.point_uv[:, 0].numpy(), g.point_uv[:, 1].numpy(),
                    g.pdist.numpy(), g.mean_geodesic.numpy(), g.coarse_parts.numpy())
    # SPIN's file lists the left leg first (the reordering swaps legs, so it is its own inverse).
    np.save(root / "J_regressor_h36m.npy", body.regressors["h36m17"].numpy()[H36M17_FROM_SPIN_H36M17])
    low = body.lowpoly
    up = low.upsampler.numpy()
    idx = np.argsort(-np.abs(up), axis=1)[:, :8]
    np.savez(root / "lowpoly.npz", low_faces=low.charts.faces.numpy(), low_face_part=low.charts.face_part.numpy(),
             low_face_uv=low.charts.face_uv.numpy(), low_full_face=low.full_face.numpy(),
             low_full_bary=low.full_bary.numpy(), low_mirror=low.mirror.numpy(),
             up_idx=idx, up_w=np.take_along_axis(up, idx, 1))
    return {
        "model_file": str(root / "SMPL_NEUTRAL.pkl"), "uv_processed": str(root / "UV_Processed.mat"),
        "uv_symmetry": str(root / "UV_symmetry_transforms.mat"), "eval_data": str(root / "eval"),
        "lowpoly": str(root / "lowpoly.npz"), "h36m_regressor": str(root / "J_regressor_h36m.npy"),
    }


def test_smpl_body_reads_every_file_like_the_original(smpl_files, body):
    smpl = load_body("smpl", **smpl_files)
    torch.testing.assert_close(smpl.v_template, body.v_template)
    assert torch.equal(smpl.faces, body.faces)
    assert torch.equal(smpl.charts.face_part, body.charts.face_part)
    torch.testing.assert_close(smpl.charts.face_uv, body.charts.face_uv)
    assert torch.equal(smpl.parents, body.parents)
    torch.testing.assert_close(smpl.uv_symmetry, body.uv_symmetry)
    torch.testing.assert_close(smpl.lowpoly.upsampler, body.lowpoly.upsampler, atol=1e-6, rtol=0)
    a = torch.arange(0, 1000)
    torch.testing.assert_close(smpl.geodesic.distance(a, a.flip(0)), body.geodesic.distance(a, a.flip(0)))
    assert torch.equal(smpl.regressors["h36m17"], body.regressors["h36m17"])


def test_smpl_body_drives_smplx(smpl_files, body):
    smpl = load_body("smpl", **smpl_files)
    pose = torch.zeros(1, 69)
    pose[0, 50] = 0.7
    ours = make_smplx(smpl.model_file, smpl.vertex_ids)(body_pose=pose).vertices
    ref = make_smplx(body.model_file, body.vertex_ids)(body_pose=pose).vertices
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_missing_smpl_file_is_a_clear_error(tmp_path, smpl_files):
    with pytest.raises(FileNotFoundError, match="SMPL model file not found"):
        load_body("smpl", **{**smpl_files, "model_file": str(tmp_path / "nope.pkl")})
