"""DensePose's SMPL chart / evaluation file formats: fixtures written in the exact layouts, read back."""

import json
import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from densehmr.body.assets import COARSE_PARTS, Charts
from densehmr.body.densepose_files import (
    DENSEPOSE_SMPL_MEAN_GEODESIC,
    read_eval_data,
    read_uv_processed,
    read_uv_symmetry,
    write_eval_data,
)
from densehmr.body.geodesic import condense


def densepose_condensed(dense: np.ndarray) -> np.ndarray:
    """A condensed (L, 1) vector laid out so DensePose's getDistancesUV arithmetic reads dense[i, j]."""
    n = len(dense)
    out = np.full((n * (n - 1) // 2, 1), np.nan)
    for i0 in range(n):
        for j0 in range(n):
            if i0 == j0:
                continue
            i, j = (j0, i0) if j0 > i0 else (i0, j0)
            i, j = n - i - 1, n - j - 1
            k = (n * (n - 1) / 2) - (n - i) * ((n - i) - 1) / 2 + j - i - 1
            out[int((n * n - n) / 2 - k - 1), 0] = dense[i0, j0]
    return out


def random_metric(n: int, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).random((n, 3))
    return np.linalg.norm(p[:, None] - p[None], axis=-1)


@pytest.fixture
def eval_points():
    rng = np.random.default_rng(0)
    n = 40
    return rng.integers(1, 25, n), rng.random(n), rng.random(n), random_metric(n, 1)


def test_write_eval_data_layout(tmp_path, eval_points):
    part, u, v, dense = eval_points
    n = len(part)
    kappa = np.linspace(0, 0.4, 9)
    write_eval_data(tmp_path, part, u, v, condense(dense), kappa, np.asarray(COARSE_PARTS))

    subdiv = scipy.io.loadmat(tmp_path / "SMPL_subdiv.mat")
    for key in ("U_subdiv", "V_subdiv", "Part_ID_subdiv"):
        assert subdiv[key].shape == (1, n)
    np.testing.assert_array_equal(subdiv["Part_ID_subdiv"][0], part)
    np.testing.assert_allclose(subdiv["U_subdiv"][0], u)
    index = scipy.io.loadmat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat")["index"]
    np.testing.assert_array_equal(index, np.arange(1, n + 1)[None])

    # MATLAB v7.3: an HDF5 file behind MATLAB's header, as DensePose's evaluator reads it (h5py).
    assert scipy.io.matlab.matfile_version(tmp_path / "Pdist_matrix.mat") == (2, 0)
    with h5py.File(tmp_path / "Pdist_matrix.mat", "r") as f:
        pdist = np.array(f["Pdist_matrix"])
    assert pdist.shape == (n * (n - 1) // 2, 1)
    np.testing.assert_allclose(pdist, densepose_condensed(dense), rtol=1e-6)

    params = json.loads((tmp_path / "eval_params.json").read_text())
    np.testing.assert_allclose(params["mean_geodesic_distances"], kappa)
    assert params["coarse_parts"] == list(COARSE_PARTS)


def test_written_dtypes_are_the_ones_densepose_evaluators_index_with(tmp_path, eval_points):
    """Part ids and the transform are integers (the evaluator computes
    CoarseParts[Part_ids[closest - 1]], an IndexError with float part ids); the distances come both
    as Pdist_matrix.mat (DensePose's, MeshPose's evaluators) and Pdist_matrix.pkl (detectron2's)."""
    part, u, v, dense = eval_points
    write_eval_data(tmp_path, part.astype(np.float64), u, v, condense(dense), np.zeros(9), np.asarray(COARSE_PARTS))
    subdiv = scipy.io.loadmat(tmp_path / "SMPL_subdiv.mat")
    part_ids = np.array(subdiv["Part_ID_subdiv"].squeeze())
    transform = scipy.io.loadmat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat")["index"].squeeze()
    assert np.issubdtype(part_ids.dtype, np.integer) and np.issubdtype(transform.dtype, np.integer)
    assert subdiv["U_subdiv"].dtype == np.float64
    closest = np.array([3.0, -1.0, 7.0])  # 1-based closest points as the evaluator holds them (float)
    coarse = np.asarray(COARSE_PARTS)[part_ids[closest[closest > 0].astype(int) - 1]]
    np.testing.assert_array_equal(coarse, np.asarray(COARSE_PARTS)[part[[2, 6]]])
    np.testing.assert_array_equal(transform[closest.astype(int) - 1][[0, 2]], [3, 7])
    with open(tmp_path / "Pdist_matrix.pkl", "rb") as f:
        pickled = pickle.load(f, encoding="latin1")["Pdist_matrix"]
    with h5py.File(tmp_path / "Pdist_matrix.mat", "r") as f:
        np.testing.assert_array_equal(pickled, f["Pdist_matrix"][()])
    with pytest.raises(ValueError, match="whole part numbers"):
        write_eval_data(tmp_path, part + 0.5, u, v, condense(dense), np.zeros(9), np.asarray(COARSE_PARTS))


def test_eval_data_round_trip(tmp_path, eval_points):
    part, u, v, dense = eval_points
    kappa = np.linspace(0, 0.4, 9)
    coarse = np.asarray(COARSE_PARTS)
    write_eval_data(tmp_path, torch.as_tensor(part), u, v, condense(dense), kappa, coarse)
    geo = read_eval_data(tmp_path)
    np.testing.assert_array_equal(geo.point_part.numpy(), part)
    np.testing.assert_allclose(geo.point_uv.numpy(), np.stack([u, v], 1), atol=1e-7)
    np.testing.assert_array_equal(geo.transform.numpy(), np.arange(len(part)))
    np.testing.assert_allclose(geo.mean_geodesic.numpy(), kappa, atol=1e-7)
    np.testing.assert_array_equal(geo.coarse_parts.numpy(), coarse)
    assert (geo.point_face == -1).all() and (geo.point_bary == 0).all()
    a, b = torch.randint(0, len(part), (2, 500), generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(geo.distance(a, b).numpy(), dense[a.numpy(), b.numpy()], rtol=1e-6)


def test_read_real_layout_with_pickle_and_transform(tmp_path):
    # DensePose's real data: n distance points, N >= n evaluation points mapped to them (1-based),
    # Pdist_matrix.pkl in the evaluator's order, no eval_params.json (SMPL's published kappas).
    n, num_points = 30, 45
    dense = random_metric(n, 2)
    rng = np.random.default_rng(3)
    index = np.concatenate([np.arange(1, n + 1), rng.integers(1, n + 1, num_points - n)])
    scipy.io.savemat(
        tmp_path / "SMPL_subdiv.mat",
        {
            "U_subdiv": rng.random((1, num_points)),
            "V_subdiv": rng.random((1, num_points)),
            "Part_ID_subdiv": rng.integers(1, 25, (1, num_points)).astype(np.float64),
        },
    )
    scipy.io.savemat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat", {"index": index[None].astype(np.float64)})
    with open(tmp_path / "Pdist_matrix.pkl", "wb") as f:
        pickle.dump({"Pdist_matrix": densepose_condensed(dense)}, f, protocol=2)
    geo = read_eval_data(tmp_path)
    assert geo.num_points == num_points
    np.testing.assert_allclose(geo.mean_geodesic.numpy(), DENSEPOSE_SMPL_MEAN_GEODESIC, atol=1e-7)
    np.testing.assert_array_equal(geo.coarse_parts.numpy(), COARSE_PARTS)
    a, b = torch.randint(0, num_points, (2, 1000), generator=torch.Generator().manual_seed(1))
    assert (geo.transform[a] == geo.transform[b]).any() and (a != b).any()
    expect = dense[index[a.numpy()] - 1, index[b.numpy()] - 1]
    np.testing.assert_allclose(geo.distance(a, b).numpy(), expect, rtol=1e-6)


def test_points_sharing_a_distance_row_are_zero_apart(tmp_path):
    # Real data maps seam duplicates (one UV per chart) to one distance row: their distance is 0.
    n = 5
    write_eval_data(
        tmp_path,
        np.ones(n),
        np.zeros(n),
        np.zeros(n),
        condense(random_metric(n, 0)),
        np.zeros(9),
        np.asarray(COARSE_PARTS),
    )
    scipy.io.savemat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat", {"index": np.array([[1.0, 2, 3, 4, 5, 5]])})
    scipy.io.savemat(
        tmp_path / "SMPL_subdiv.mat",
        {"U_subdiv": np.zeros((1, 6)), "V_subdiv": np.zeros((1, 6)), "Part_ID_subdiv": np.ones((1, 6))},
    )
    geo = read_eval_data(tmp_path)
    assert geo.distance(torch.tensor([4]), torch.tensor([5])).item() == 0.0


def test_read_eval_data_locates_points_on_charts(tmp_path):
    # Two-triangle square chart: the points' (face, bary) are recovered from their (I, U, V).
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face_uv = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    charts = Charts(faces, torch.tensor([5, 5]), face_uv)
    u, v = np.array([0.7, 0.2, 0.5]), np.array([0.1, 0.6, 0.25])
    write_eval_data(tmp_path, np.full(3, 5), u, v, np.ones(3), np.zeros(9), np.asarray(COARSE_PARTS))
    geo = read_eval_data(tmp_path, charts=charts)
    np.testing.assert_array_equal(geo.point_face.numpy(), [0, 1, 0])
    uv = (face_uv[geo.point_face] * geo.point_bary[:, :, None]).sum(1)
    np.testing.assert_allclose(uv.numpy(), np.stack([u, v], 1), atol=1e-6)


def test_read_uv_processed(tmp_path):
    # A 5-vertex "SMPL" mesh whose vertices 1 and 2 lie on a seam between the charts of parts 2 and 9.
    smpl_faces = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4]])
    face_part = np.array([2, 2, 9])
    # UV-split vertices: one per (part, SMPL vertex); All_Faces indexes them 1-based.
    keys = sorted({(p, s) for p, tri in zip(face_part, smpl_faces, strict=True) for s in tri})
    split_id = {k: i for i, k in enumerate(keys)}
    all_faces = np.array(
        [[split_id[(p, s)] + 1 for s in tri] for p, tri in zip(face_part, smpl_faces, strict=True)]
    )
    split_uv = np.random.default_rng(4).random((len(keys), 2))
    scipy.io.savemat(
        tmp_path / "UV_Processed.mat",
        {
            "All_FaceIndices": face_part[:, None].astype(np.float64),
            "All_Faces": all_faces.astype(np.float64),
            "All_U_norm": split_uv[:, :1],
            "All_V_norm": split_uv[:, 1:],
            "All_vertices": np.array([[s + 1 for _, s in keys]], dtype=np.float64),
        },
    )
    faces, part, uv = read_uv_processed(tmp_path / "UV_Processed.mat")
    np.testing.assert_array_equal(faces, smpl_faces)
    np.testing.assert_array_equal(part, face_part)
    assert uv.dtype == np.float32 and uv.shape == (3, 3, 2)
    np.testing.assert_allclose(uv, split_uv[all_faces - 1], atol=1e-7)
    # The seam vertex 2 has one UV per chart.
    assert not np.allclose(uv[0, 2], uv[2, 0])


def test_read_uv_symmetry(tmp_path):
    rng = np.random.default_rng(5)
    u_maps, v_maps = rng.random((24, 256, 256)), rng.random((24, 256, 256))
    cells_u, cells_v = np.empty((1, 24), dtype=object), np.empty((1, 24), dtype=object)
    for p in range(24):
        cells_u[0, p], cells_v[0, p] = u_maps[p], v_maps[p]
    scipy.io.savemat(
        tmp_path / "UV_symmetry_transforms.mat", {"U_transforms": cells_u, "V_transforms": cells_v}
    )
    table = read_uv_symmetry(tmp_path / "UV_symmetry_transforms.mat")
    assert table.shape == (24, 256, 256, 2) and table.dtype == np.float32
    np.testing.assert_allclose(table[..., 0], u_maps, atol=1e-7)
    np.testing.assert_allclose(table[..., 1], v_maps, atol=1e-7)


def test_write_rejects_mismatched_pdist(tmp_path):
    with pytest.raises(ValueError, match="pdist"):
        write_eval_data(
            tmp_path, np.ones(4), np.zeros(4), np.zeros(4), np.zeros(5), np.zeros(9), np.zeros(25)
        )
