"""ONNX export of each method's inference graph: standard operators, onnxruntime equal to PyTorch on
random and real inputs, dynamic batch, and the results table."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_demo import make_run

from densehmr.export import (
    OPSET,
    export_and_check,
    export_onnx,
    real_inputs,
    session,
    write_results,
)
from densehmr.inference import load_method

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def meshpose(tmp_path_factory):
    model, _ = load_method(run=make_run(tmp_path_factory.mktemp("runs") / "meshpose" / "r1"))
    return model


def test_meshpose_exports_with_standard_operators_and_matches_pytorch(meshpose, tmp_path):
    path = tmp_path / "meshpose.onnx"
    graph, operators = export_onnx(meshpose, path)
    proto = onnx.load(str(path))
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET
    assert {"Conv", "Softmax", "Sigmoid", "MatMul"} <= set(operators)  # heatmaps, argsoftmax, fusion
    assert set(graph.outputs) == {"heatmaps", "mask_logits", "visibility_logits", "verts_low", "xy_heatmap",
                                  "xyz_regressed"}
    sess = session(path, threads=1)
    images = torch.cat([torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), real_inputs(meshpose)])
    got = dict(zip(graph.outputs, sess.run(None, {"image": images.numpy()}), strict=True))
    with torch.no_grad():
        want = meshpose(images)
    for name in graph.outputs:  # a batch of 8: the batch axis is dynamic
        assert got[name].shape == tuple(want[name].shape), name
        assert np.abs(got[name] - want[name].numpy()).max() < TOLERANCE, name
    # The graph is the fusion: w xy_heatmap + (1 - w) xy_regressed, seam-averaged (recomputed here from its parts).
    w = 1 / (1 + np.exp(-got["visibility_logits"]))[..., None]
    fused = w * got["xy_heatmap"] + (1 - w) * got["xyz_regressed"][..., :2]
    if meshpose.seam_average is not None:
        fused = np.einsum("uv,bvc->buc", meshpose.seam_average.numpy(), fused)
    assert np.abs(fused - got["verts_low"][..., :2]).max() < TOLERANCE


def test_export_report_and_results_table(meshpose, tmp_path):
    report = export_and_check(meshpose, "meshpose", "test-run", tmp_path / "onnx", repeats=2)
    assert report.max_abs_diff_random < TOLERANCE and report.max_abs_diff_real < TOLERANCE
    assert report.torch_ms > 0 and report.onnxruntime_ms > 0 and report.image_size == [64, 64]
    table = write_results(report, tmp_path / "results")
    stored = json.loads((tmp_path / "results" / "export.json").read_text())
    assert stored["meshpose mobilenet_v2 64x64"]["weights"] == "test-run"
    row = [ln for ln in table.read_text().splitlines() if ln.startswith("| meshpose")]
    assert len(row) == 1 and f"{report.onnxruntime_ms}" in row[0] and f"{report.torch_ms}" in row[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["densereg", "pymaf", "dct"])
def test_every_method_exports_and_matches_pytorch(method, tmp_path):
    model, _ = load_method(run=make_run(tmp_path / "runs" / method / "r1", method))
    report = export_and_check(model, method, "random", tmp_path / "onnx", repeats=1)
    # Random weights give HMR methods keypoints of any size, so the error is taken relative; float32 joint
    # regression sums ~13k vertices, which puts it near 1e-5.
    assert report.max_rel_diff < 5e-5, report
    assert "verts" in report.outputs or "part_logits" in report.outputs
