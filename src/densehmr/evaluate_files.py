"""Evaluate result files against GT files, printing the metrics as JSON.

    python -m densehmr.evaluate_files keypoints --gt person_keypoints.json --dt results.json
    python -m densehmr.evaluate_files densepose --gt densepose_coco.json --dt results.json --body open
    python -m densehmr.evaluate_files densepose --gt ... --dt ... --body smpl --eval-data DIR
    python -m densehmr.evaluate_files mesh --gt gt.npz --dt pred.npz [--regressor J_regressor_h36m.npy]

keypoints: COCO GT JSON and COCO keypoint results (`image_id`, `category_id`, `keypoints`, `score`).
densepose: DensePose-COCO GT JSON and results whose entries hold `image_id`, `category_id`, `bbox`
  [x, y, w, h], `score` and `iuv` (base64 PNG, int(h)×int(w)×3 uint8 [I, U·255, V·255] over the box;
  see densehmr.metrics.iuv_png). DIR holds DensePose's evaluation files (SMPL_subdiv.mat,
  SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl or .mat).
mesh: .npz files with `verts` (N, V, 3) and/or `joints` (N, 17, 3) H36M-17, metres; vertices need the
  H36M regressor (--regressor .npy (17, V), else the body's).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from densehmr.body.assets import GeodesicEval
from densehmr.metrics import DensePoseAP, KeypointAP, MeshError
from densehmr.metrics.coco_matching import STAT_NAMES
from densehmr.metrics.densepose_ap import MODES
from densehmr.metrics.iuv_png import decode_iuv_png

# Images per update: bounds the memory of decoded IUV maps.
IMAGES_PER_UPDATE = 256
MESHES_PER_UPDATE = 512


def _by_image(gt: Mapping, results: Sequence[Mapping]) -> tuple[list[dict], list[list], list[list]]:
    """GT images with their annotations and results, for the GT's one category (COCOeval's useCats)."""
    categories = {c["id"] for c in gt.get("categories", [])} or {a["category_id"] for a in gt["annotations"]}
    if len(categories) != 1:
        raise ValueError(f"evaluation covers one category, the GT has {sorted(categories)}")
    (category,) = categories
    images = list(gt["images"])
    index = {im["id"]: i for i, im in enumerate(images)}
    gts: list[list] = [[] for _ in images]
    dts: list[list] = [[] for _ in images]
    for ann in gt["annotations"]:
        if ann["category_id"] == category:
            gts[index[ann["image_id"]]].append(ann)
    for res in results:
        if res["image_id"] not in index:
            raise ValueError(f"result for image {res['image_id']}, which is not in the GT")
        if res["category_id"] == category:
            dts[index[res["image_id"]]].append(res)
    return images, gts, dts


def _stats(values: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    return {name: float(values[prefix + name.lower()]) for name in STAT_NAMES}


def evaluate_keypoints(gt: Mapping, results: Sequence[Mapping]) -> dict[str, float]:
    """COCO keypoint AP/AR of results against a COCO GT dict."""
    # COCO.loadRes takes every result's area from its box if the first result has one, else from
    # its keypoints' extent.
    if not (results and results[0].get("bbox")):
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    images, gts, dts = _by_image(gt, results)
    metric = KeypointAP()
    for i in range(0, len(images), IMAGES_PER_UPDATE):
        s = slice(i, i + IMAGES_PER_UPDATE)
        metric.update(images[s], gts[s], dts[s])
    return _stats(metric.compute())


def evaluate_densepose(
    gt: Mapping,
    results: Sequence[Mapping],
    geodesic: GeodesicEval,
    modes: Sequence[str] = MODES,
    kappa: str = "per_part",
) -> dict[str, dict[str, float]]:
    """DensePose AP/AR per mode of results (with base64 PNG `iuv`) against a DensePose-COCO GT dict."""
    images, gts, dts = _by_image(gt, results)
    metric = DensePoseAP(geodesic, modes=modes, kappa=kappa)
    for i in range(0, len(images), IMAGES_PER_UPDATE):
        s = slice(i, i + IMAGES_PER_UPDATE)
        decoded = [[{**d, "iuv": decode_iuv_png(d["iuv"])} for d in image_dts] for image_dts in dts[s]]
        metric.update(images[s], gts[s], decoded)
    values = metric.compute()
    return {mode: _stats(values, f"{mode}_") for mode in modes}


def evaluate_mesh(
    gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray], regressor: torch.Tensor | None, root: str
) -> dict[str, float | str | None]:
    """MPJPE, PA-MPJPE, PVE (mm) of predicted vs GT `verts` / `joints` arrays; nan becomes None."""
    count = len(next(iter(gt.values())))
    metric = MeshError(None if regressor is None else regressor.double(), root=root)

    def part(arrays: Mapping[str, np.ndarray], key: str, s: slice) -> torch.Tensor | None:
        return torch.from_numpy(np.asarray(arrays[key][s], dtype=np.float64)) if key in arrays else None

    for i in range(0, count, MESHES_PER_UPDATE):
        s = slice(i, i + MESHES_PER_UPDATE)
        metric.update(
            pred_verts=part(pred, "verts", s),
            gt_verts=part(gt, "verts", s),
            pred_joints=part(pred, "joints", s),
            gt_joints=part(gt, "joints", s),
        )
    out: dict[str, float | str | None] = {k: float(v) for k, v in metric.compute().items()}
    out = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}
    out["protocol"] = metric.protocol
    return out


def _geodesic(body: str, eval_data: str | None) -> GeodesicEval:
    if eval_data is not None:
        from densehmr.body.densepose_files import read_eval_data

        return read_eval_data(eval_data)
    if body == "smpl":
        raise SystemExit("--body smpl needs --eval-data DIR (DensePose's evaluation files)")
    from densehmr.body import load_body

    return load_body(body).geodesic


def _regressor(path: str | None, body: str, needed: bool) -> torch.Tensor | None:
    if path is not None:
        return torch.from_numpy(np.load(path))
    if not needed:
        return None
    from densehmr.body import load_body

    return load_body(body).regressors["h36m17"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m densehmr.evaluate_files", description=__doc__.split("\n")[0]
    )
    parser.add_argument("task", choices=("keypoints", "densepose", "mesh"))
    parser.add_argument("--gt", required=True, help="GT file (COCO JSON, or .npz for mesh)")
    parser.add_argument("--dt", required=True, help="results file (COCO results JSON, or .npz for mesh)")
    parser.add_argument("--body", default="open", choices=("open", "smpl"))
    parser.add_argument("--eval-data", default=None, help="folder of DensePose's evaluation files")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--kappa", default="per_part", choices=("per_part", "fixed"))
    parser.add_argument("--regressor", default=None, help="(17, V) H36M regressor .npy for mesh vertices")
    parser.add_argument("--root", default="pelvis", choices=("pelvis", "hips"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.task == "mesh":
        gt, pred = dict(np.load(args.gt)), dict(np.load(args.dt))
        needs_regressor = "joints" not in gt or "joints" not in pred
        out = evaluate_mesh(gt, pred, _regressor(args.regressor, args.body, needs_regressor), args.root)
    else:
        gt = json.loads(Path(args.gt).read_text())
        results = json.loads(Path(args.dt).read_text())
        if args.task == "keypoints":
            out = evaluate_keypoints(gt, results)
        else:
            out = evaluate_densepose(
                gt, results, _geodesic(args.body, args.eval_data), args.modes, args.kappa
            )
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return out


if __name__ == "__main__":
    main()
