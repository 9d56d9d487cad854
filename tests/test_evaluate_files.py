"""python -m densehmr.evaluate_files on files in the real formats."""

import base64
import contextlib
import io
import json
import pickle
import re

import numpy as np
import pytest
import scipy.io
import torch
from pycocotools import mask as mask_utils
from test_metrics_densepose_ap import GEO, random_densepose_set
from test_metrics_keypoint_ap import pycocotools_stats, random_keypoint_set

from densehmr.body.assets import H36M_TO_LSP14, Charts
from densehmr.body.densepose_files import read_eval_data
from densehmr.evaluate_files import evaluate_densepose, main
from densehmr.metrics import DensePoseAP
from densehmr.metrics.coco_matching import STAT_NAMES
from densehmr.metrics.densepose_results import ResultsError
from densehmr.metrics.hmr_results import hmr_detection
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


def write_random_set(tmp_path, layout: str):
    """random_densepose_set(1) as a GT JSON and results in `layout`: "iuv" (this project's) or
    "official" (DensePose's uv_shape / uv_data, base64 with Python 2's line breaks)."""
    images, gts, dts = random_densepose_set(1)
    anns, results = [], []
    for image, image_gts, image_dts in zip(images, gts, dts, strict=True):
        for g in image_gts:
            masks = [{"size": m["size"], "counts": m["counts"].decode()} if m else [] for m in g["dp_masks"]]
            anns.append(
                {**g, "id": len(anns) + 1, "image_id": image["id"], "category_id": 1, "dp_masks": masks}
            )
        for d in image_dts:
            entry = {"image_id": image["id"], "category_id": 1, "bbox": d["bbox"], "score": d["score"]}
            if layout == "iuv":
                entry["iuv"] = encode_iuv_png(d["iuv"])
            else:
                png = base64.b64decode(encode_iuv_png(d["iuv"]))
                entry.update(uv_shape=list(d["iuv"].shape), uv_data=base64.encodebytes(png).decode())
            results.append(entry)
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / f"dt_{layout}.json").write_text(json.dumps(results))
    return images, gts, dts, results


def densepose_args(tmp_path, dt: str, *extra: str) -> list[str]:
    return ["densepose", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / dt), "--body", "smpl",
            "--eval-data", str(tmp_path / "eval"), *extra]


@pytest.mark.parametrize("layout", ["iuv", "official"])
def test_densepose_command_on_real_formats(tmp_path, layout):
    """Both result layouts (DensePose's official uv_shape / uv_data, which used to stop the command
    with KeyError 'iuv', and this project's iuv) score as the metric on the decoded maps."""
    write_densepose_eval_data(tmp_path / "eval", GEO)
    images, gts, dts, results = write_random_set(tmp_path, layout)
    if layout == "iuv":
        assert all(
            (decode_iuv_png(r["iuv"]) == d["iuv"]).all() for r, d in zip(results, sum(dts, []), strict=True)
        )
    else:
        assert "\n" in results[0]["uv_data"] and results[0]["uv_shape"][0] == 3

    out = run_main(densepose_args(tmp_path, f"dt_{layout}.json", "--write-results", str(tmp_path / "out.json")))
    metric = DensePoseAP(GEO)
    metric.update(images, gts, dts)
    expected = {k: float(v) for k, v in metric.compute().items()}
    assert set(out) == {"gps", "gpsm", "iou"}
    for mode, values in out.items():
        assert values == pytest.approx({n: expected[f"{mode}_{n.lower()}"] for n in STAT_NAMES}, abs=1e-12)
    # The detections come back out in the official layout and score the same again.
    written = json.loads((tmp_path / "out.json").read_text())
    assert len(written) == len(results) and {"uv_shape", "uv_data"} <= set(written[0]) and "iuv" not in written[0]
    assert run_main(densepose_args(tmp_path, "out.json")) == out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.pop("uv_shape"), "result 0: no field 'uv_shape'"),
        (lambda r: r.update(uv_shape=[3, 1, 1]), "result 0: field 'uv_shape' is [3, 1, 1]"),
        (lambda r: r.update(uv_data="not a png"), "result 0: field 'uv_data' is not a base64 PNG"),
        (lambda r: r.pop("category_id"), "result 0: no field 'category_id'"),
        (lambda r: r.update(image_id=999), "result 0: field 'image_id' is 999"),
        (lambda r: r.update(bbox=[0, 0, 5, 5]), "result 0: field 'uv_data' is [3,"),
    ],
)
def test_bad_results_stop_with_one_line_naming_file_record_and_field(tmp_path, edit, message):
    write_densepose_eval_data(tmp_path / "eval", GEO)
    _, _, _, results = write_random_set(tmp_path, "official")
    edit(results[0])
    (tmp_path / "bad.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit) as stop:
        run_main(densepose_args(tmp_path, "bad.json"))
    text = str(stop.value)
    assert text.startswith(f"error: {tmp_path / 'bad.json'}: ") and message in text and "\n" not in text


# A flat 4-vertex "body": a square of part 1 whose chart is U = x, V = y on the unit square.
SQUARE_CHARTS = Charts(
    torch.tensor([[0, 1, 2], [0, 2, 3]]),
    torch.tensor([1, 1]),
    torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]),
)
HMR_BOX = [10.0, 20.0, 100.0, 200.0]


def left_dp_masks() -> list:
    """A person filling the left 148 of 256 columns: the left 58 of a 100 px wide box."""
    m = np.zeros((256, 256), dtype=np.uint8)
    m[:, :148] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return [{"size": rle["size"], "counts": rle["counts"].decode()}] + [[] for _ in range(13)]


def test_hmr_record_renders_the_mesh_over_the_gt_box_with_its_charts():
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    record = {"image_id": 1, "id": 7, "smpl_xy_proj": (corners * [100, 200] + [10, 20]).tolist(), "smpl_z": [0.0] * 4}
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": HMR_BOX, "dp_masks": left_dp_masks()}
    image = {"id": 1, "height": 300, "width": 300}
    det, iuv = hmr_detection(record, ann, image, SQUARE_CHARTS, 4, "unmasked", "r")
    assert det == {"image_id": 1, "category_id": 1, "bbox": HMR_BOX, "score": 1.0}
    assert iuv.shape == (3, 200, 100) and iuv.dtype == np.uint8
    # Pixel (row, col) of the box: part 1, U = (col + 0.5) / 100, V = (row + 0.5) / 200, times 255, truncated.
    for row, col in ((0, 0), (5, 30), (150, 77), (199, 99)):
        expected = [1, int((col + 0.5) / 100 * 255), int((row + 0.5) / 200 * 255)]
        assert np.abs(iuv[:, row, col].astype(int) - expected).max() <= 1
    # MeshPose's protocol keeps the left 58 columns, where the GT dp_masks (nearest neighbour: column j
    # reads mask column floor(2.56 j) < 148) are.
    _, masked = hmr_detection(record, ann, image, SQUARE_CHARTS, 4, "gt_mask", "r")
    assert (masked[:, :, :58] == iuv[:, :, :58]).all() and (masked[:, :, 58:] == 0).all()
    # Outside the image nothing is rendered; without dp_masks MeshPose's protocol skips the record.
    _, clipped = hmr_detection(record, ann, {**image, "width": 60}, SQUARE_CHARTS, 4, "unmasked", "r")
    assert (clipped[:, :, 50:] == 0).all() and (clipped[:, :, :50] == iuv[:, :, :50]).all()
    bare = {k: v for k, v in ann.items() if k != "dp_masks"}
    assert hmr_detection(record, bare, image, SQUARE_CHARTS, 4, "gt_mask", "r") is None


def test_meshpose_general_hmr_json_is_scored_with_the_gt_mask_protocol_by_default():
    """MeshPose's general HMR JSON (it used to stop the command with KeyError 'category_id'): the mesh
    covers the whole box, the GT person its left 58 columns (199 rows after DensePose's bilinear zoom).
    Masked by the GT (MeshPose's protocol) the mask IoU is 58 x 199 / (58 x 200) = 0.995, all ten
    thresholds; unmasked it is 58 x 199 / (100 x 200) = 0.577, two of them."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    record = {"image_id": 1, "id": 7, "smpl_xy_proj": (corners * [100, 200] + [10, 20]).tolist(), "smpl_z": [0.0] * 4}
    ann = {
        "id": 7, "image_id": 1, "category_id": 1, "bbox": HMR_BOX, "area": 1e4, "iscrowd": 0,
        "dp_masks": left_dp_masks(), "dp_x": [50.0, 20.0], "dp_y": [100.0, 30.0], "dp_I": [1.0, 1.0],
        "dp_U": [0.2, 0.1], "dp_V": [0.5, 0.1],
    }
    gt = {"images": [{"id": 1, "height": 300, "width": 300}], "annotations": [ann],
          "categories": [{"id": 1, "name": "person"}]}
    default = evaluate_densepose(gt, [record], GEO, modes=("iou",), charts=(SQUARE_CHARTS, 4))
    unmasked = evaluate_densepose(gt, [record], GEO, modes=("iou",), charts=(SQUARE_CHARTS, 4), protocol="unmasked")
    assert default["iou"]["AP"] == pytest.approx(1.0)
    assert unmasked["iou"]["AP"] == pytest.approx(0.2)


def test_bad_hmr_records_name_their_field():
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": HMR_BOX, "area": 1e4, "dp_masks": left_dp_masks()}
    gt = {"images": [{"id": 1, "height": 300, "width": 300}], "annotations": [ann],
          "categories": [{"id": 1, "name": "person"}]}
    square = [[10, 20], [110, 20], [110, 220], [10, 220]]
    cases = [
        ({"image_id": 1, "id": 8, "smpl_xy_proj": square, "smpl_z": [0] * 4}, "field 'id' is 8"),
        ({"image_id": 2, "id": 7, "smpl_xy_proj": square, "smpl_z": [0] * 4}, "field 'image_id' is 2"),
        ({"image_id": 1, "id": 7, "smpl_xy_proj": square}, "no field 'smpl_z'"),
        ({"image_id": 1, "id": 7, "smpl_xy_proj": square[:3], "smpl_z": [0] * 4}, "field 'smpl_xy_proj' is [3, 2]"),
        ({"image_id": 1, "id": 7, "smpl_xy_proj": square, "smpl_z": [0, 0, float("nan"), 0]},
         "fields 'smpl_xy_proj' / 'smpl_z' hold non-finite values"),
    ]
    good = {"image_id": 1, "id": 7, "smpl_xy_proj": square, "smpl_z": [0] * 4}
    for record, message in cases:
        with pytest.raises(ResultsError, match=re.escape(f"meshes.json: result 1: {message}")):
            evaluate_densepose(gt, [good, record], GEO, charts=(SQUARE_CHARTS, 4), source="meshes.json")


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
