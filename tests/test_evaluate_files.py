"""python -m densehmr.evaluate_files on files in the real formats."""

import contextlib
import io
import json
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from test_metrics_densepose_ap import GEO, random_densepose_set
from test_metrics_keypoint_ap import pycocotools_stats, random_keypoint_set

from densehmr.body.assets import H36M_TO_LSP14
from densehmr.body.densepose_files import read_eval_data
from densehmr.evaluate_files import main
from densehmr.metrics import DensePoseAP
from densehmr.metrics.coco_matching import STAT_NAMES
from densehmr.metrics.iuv_png import decode_iuv_png, encode_iuv_png


def run_main(argv) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main(argv)
    return json.loads(out.getvalue())


def test_keypoints_command_equals_pycocotools(tmp_path):
    gt, dts = random_keypoint_set(5, with_bbox=False)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    out = run_main(["keypoints", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")])
    np.testing.assert_allclose([out[n] for n in STAT_NAMES], pycocotools_stats(gt, dts), rtol=0, atol=1e-9)


def write_densepose_eval_data(folder, geo):
    """GEO in DensePose's real layout: .mat point tables, a 1-based row transform, a pickled table."""
    folder.mkdir()
    row = lambda a: np.asarray(a, dtype=np.float64).reshape(1, -1)  # noqa: E731
    scipy.io.savemat(
        folder / "SMPL_subdiv.mat",
        {
            "U_subdiv": row(geo.point_uv[:, 0].double()),
            "V_subdiv": row(geo.point_uv[:, 1].double()),
            "Part_ID_subdiv": row(geo.point_part),
        },
    )
    scipy.io.savemat(folder / "SMPL_SUBDIV_TRANSFORM.mat", {"index": row(geo.transform + 1)})
    with open(folder / "Pdist_matrix.pkl", "wb") as f:
        pickle.dump({"Pdist_matrix": geo.pdist.numpy().reshape(-1, 1)}, f)


def test_real_eval_data_reads_as_the_official_index_arithmetic(tmp_path):
    write_densepose_eval_data(tmp_path / "eval", GEO)
    geo = read_eval_data(tmp_path / "eval")
    table = GEO.pdist.numpy()
    n = int(geo.transform.max()) + 1
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, geo.num_points, (2, 200))
    got = geo.distance(torch.tensor(a), torch.tensor(b)).numpy()
    for x, y, d in zip(a, b, got, strict=True):
        # DensePose's getDistancesUV on 1-based transformed indices, literally.
        i, j = int(geo.transform[x]), int(geo.transform[y])
        if i == j:
            assert d == 0
            continue
        if j > i:
            i, j = j, i
        i, j = n - i - 1, n - j - 1
        k = (n * (n - 1) / 2) - (n - i) * ((n - i) - 1) / 2 + j - i - 1
        k = (n * n - n) / 2 - k - 1
        assert d == table[int(k)]


def test_densepose_command_on_real_formats(tmp_path):
    write_densepose_eval_data(tmp_path / "eval", GEO)
    images, gts, dts = random_densepose_set(1)
    anns, results = [], []
    for image, image_gts, image_dts in zip(images, gts, dts, strict=True):
        for g in image_gts:
            masks = [{"size": m["size"], "counts": m["counts"].decode()} if m else [] for m in g["dp_masks"]]
            anns.append(
                {**g, "id": len(anns) + 1, "image_id": image["id"], "category_id": 1, "dp_masks": masks}
            )
        for d in image_dts:
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": 1,
                    "bbox": d["bbox"],
                    "score": d["score"],
                    "iuv": encode_iuv_png(d["iuv"]),
                }
            )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    assert all(
        (decode_iuv_png(r["iuv"]) == d["iuv"]).all() for r, d in zip(results, sum(dts, []), strict=True)
    )

    out = run_main(
        [
            "densepose",
            "--gt",
            str(tmp_path / "gt.json"),
            "--dt",
            str(tmp_path / "dt.json"),
            "--body",
            "smpl",
            "--eval-data",
            str(tmp_path / "eval"),
        ]
    )
    metric = DensePoseAP(GEO)
    metric.update(images, gts, dts)
    expected = {k: float(v) for k, v in metric.compute().items()}
    assert set(out) == {"gps", "gpsm", "iou"}
    for mode, values in out.items():
        assert values == pytest.approx({n: expected[f"{mode}_{n.lower()}"] for n in STAT_NAMES}, abs=1e-12)


def test_mesh_command(tmp_path):
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(4, 17, 3))
    moved = joints.copy()
    moved[:, H36M_TO_LSP14[0], 0] += 0.014  # the right ankle, 14 mm
    np.savez(tmp_path / "gt.npz", joints=joints)
    np.savez(tmp_path / "pred.npz", joints=moved)
    out = run_main(["mesh", "--gt", str(tmp_path / "gt.npz"), "--dt", str(tmp_path / "pred.npz")])
    assert out["mpjpe"] == pytest.approx(1.0) and out["pve"] is None
    assert out["protocol"] == "lsp14/h36m-regressor/pelvis"

    reg = rng.random((17, 50))
    np.save(tmp_path / "reg.npy", reg / reg.sum(1, keepdims=True))
    verts = rng.normal(size=(4, 50, 3))
    np.savez(tmp_path / "gt.npz", verts=verts)
    np.savez(tmp_path / "pred.npz", verts=verts + [0.5, 0.0, 2.0])
    out = run_main(
        [
            "mesh",
            "--gt",
            str(tmp_path / "gt.npz"),
            "--dt",
            str(tmp_path / "pred.npz"),
            "--regressor",
            str(tmp_path / "reg.npy"),
            "--root",
            "hips",
        ]
    )
    assert out["mpjpe"] == pytest.approx(0.0, abs=1e-9) and out["pve"] == pytest.approx(0.0, abs=1e-9)
    assert out["pa_mpjpe"] == pytest.approx(0.0, abs=1e-6)
