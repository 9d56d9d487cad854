"""Evaluate result files against GT files, printing the metrics as JSON.

    python -m densehmr.evaluate_files keypoints --gt person_keypoints.json --dt results.json
    python -m densehmr.evaluate_files densepose --gt densepose_coco.json --dt results.json --body open
    python -m densehmr.evaluate_files densepose --gt ... --dt ... --body smpl --eval-data DIR
    python -m densehmr.evaluate_files densepose --gt ... --dt meshes.json [--protocol unmasked]
    python -m densehmr.evaluate_files mesh --gt gt.npz --dt pred.npz [--regressor J_regressor_h36m.npy]

keypoints: COCO GT JSON and COCO keypoint results (`image_id`, `category_id`, `keypoints`, `score`).
densepose: DensePose-COCO GT JSON and results in any of three layouts (entries may mix them):
  - DensePose's official results: `image_id`, `category_id`, `bbox` [x, y, w, h], `score`, `uv_shape`
    [3, h, w] and `uv_data` (base64 PNG of the box's int(h)×int(w)×3 uint8 [I, U·255, V·255]);
  - the same with `iuv` (that PNG) instead of `uv_shape` / `uv_data`;
  - MeshPose's general HMR predictions: `image_id`, `id` (the GT annotation), `smpl_xy_proj` (V, 2)
    image px and `smpl_z` (V,) of the body's mesh, rendered with the body's charts and scored under
    --protocol gt_mask (MeshPose's: the rendering masked by the GT dp_masks, the default) or unmasked
    (see densehmr.metrics.hmr_results); --body smpl renders with --uv-processed UV_Processed.mat.
  DIR holds DensePose's evaluation files (SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl
  or .mat). --write-results FILE also writes the detections as evaluated, in the official layout.
mesh: .npz files with `verts` (N, V, 3) and/or `joints` (N, 17, 3) H36M-17, metres; vertices need the
  H36M regressor (--regressor .npy (17, V), else the body's).

A file that cannot be read stops the command with one line naming the file, the record and the field.
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

from densehmr.body.assets import Charts, GeodesicEval
from densehmr.metrics import DensePoseAP, KeypointAP, MeshError
from densehmr.metrics.coco_matching import STAT_NAMES
from densehmr.metrics.densepose_ap import GT_MASK, MODES, PROTOCOLS
from densehmr.metrics.densepose_results import ResultsError, official_result, require, result_iuv
from densehmr.metrics.hmr_results import HMR_FIELDS, hmr_detection, is_hmr_record

# Images per update: bounds the memory of decoded IUV maps.
IMAGES_PER_UPDATE = 256
MESHES_PER_UPDATE = 512


def _by_image(
    gt: Mapping, results: Sequence[Mapping], source: str = "results"
) -> tuple[list[dict], list[list], list[list]]:
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
    for i, res in enumerate(results):
        where = (res.get("_where") if isinstance(res, Mapping) else None) or f"{source}: result {i}"
        require(res, ("image_id", "category_id"), where)
        if res["image_id"] not in index:
            raise ResultsError(f"{where}: field 'image_id' is {res['image_id']!r}, not an image of the GT")
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


def _hmr_to_pending(
    gt: Mapping, records: Sequence[Mapping], protocol: str, source: str
) -> list[dict]:
    """MeshPose general HMR records as detections to render (GT box, score 1, GT category); under
    gt_mask, records whose annotation has no dp_masks are dropped (they carry no DensePose points)."""
    anns = {a["id"]: a for a in gt["annotations"] if "id" in a}
    images = {im["id"]: im for im in gt["images"]}
    pending = []
    for i, record in enumerate(records):
        where = f"{source}: result {i}"
        require(record, HMR_FIELDS, where)
        ann = anns.get(record["id"])
        if ann is None:
            raise ResultsError(f"{where}: field 'id' is {record['id']!r}, not an annotation of the GT")
        if ann["image_id"] != record["image_id"]:
            raise ResultsError(f"{where}: field 'image_id' is {record['image_id']!r}, annotation "
                               f"{record['id']} is on image {ann['image_id']!r}")
        if protocol == GT_MASK and "dp_masks" not in ann:
            continue
        pending.append({
            "image_id": record["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
            "score": 1.0, "_where": where, "_hmr": (record, ann, images[record["image_id"]]),
        })
    return pending


def _detections(results: Sequence, gt: Mapping, protocol: str, source: str) -> list[dict]:
    """Results in the three layouts as detections; each remembers where it came from."""
    hmr = [r for r in results if is_hmr_record(r)]
    others = [
        {**r, "_where": f"{source}: result {i}"} if isinstance(r, Mapping) else r
        for i, r in enumerate(results)
        if not is_hmr_record(r)
    ]
    return others + (_hmr_to_pending(gt, hmr, protocol, source) if hmr else [])


def evaluate_densepose(
    gt: Mapping,
    results: Sequence[Mapping],
    geodesic: GeodesicEval,
    modes: Sequence[str] = MODES,
    kappa: str = "per_part",
    charts: tuple[Charts, int] | None = None,
    protocol: str = GT_MASK,
    source: str = "results",
    written: list | None = None,
) -> dict[str, dict[str, float]]:
    """DensePose AP/AR per mode of results (layouts in the module docstring) against a DensePose-COCO
    GT dict. charts: the body's charts and vertex count, needed for MeshPose's general HMR records.
    written: when given, receives each detection as evaluated, in DensePose's official layout."""
    images, gts, dts = _by_image(gt, _detections(results, gt, protocol, source), source)
    metric = DensePoseAP(geodesic, modes=modes, kappa=kappa)
    for i in range(0, len(images), IMAGES_PER_UPDATE):
        s = slice(i, i + IMAGES_PER_UPDATE)
        decoded = [[_with_iuv(d, charts, protocol) for d in image_dts] for image_dts in dts[s]]
        if written is not None:
            written.extend(official_result(d, d["iuv"]) for image_dts in decoded for d in image_dts)
        metric.update(images[s], gts[s], decoded)
    values = metric.compute()
    return {mode: _stats(values, f"{mode}_") for mode in modes}


def _with_iuv(detection: Mapping, charts: tuple[Charts, int] | None, protocol: str) -> dict:
    """The detection with its decoded (or rendered) `iuv` (3, int(h), int(w)) uint8."""
    where = detection["_where"]
    if "_hmr" in detection:
        if charts is None:
            raise ResultsError(f"{where}: a mesh (MeshPose's general HMR layout) needs the body's charts")
        record, ann, image = detection["_hmr"]
        _, iuv = hmr_detection(record, ann, image, charts[0], charts[1], protocol, where)
    else:
        iuv = result_iuv(detection, where)
    kept = {k: v for k, v in detection.items() if not k.startswith("_") and k not in ("uv_data", "uv_shape")}
    return {**kept, "iuv": iuv}


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


def _charts(body: str, uv_processed: str | None) -> tuple[Charts, int]:
    """The charts meshes are rendered with, and the mesh's vertex count."""
    if uv_processed is not None:
        from densehmr.body.densepose_files import read_uv_processed

        faces, part, uv = read_uv_processed(uv_processed)
        charts = Charts(torch.from_numpy(faces), torch.from_numpy(part), torch.from_numpy(uv))
        return charts, int(faces.max()) + 1
    if body == "smpl":
        raise SystemExit("meshes with --body smpl need --uv-processed UV_Processed.mat (DensePose's charts)")
    from densehmr.body import load_body

    loaded = load_body(body)
    return loaded.charts, loaded.num_vertices


def _read_json(path: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read as JSON ({exc})") from None


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
    parser.add_argument(
        "--protocol", default=GT_MASK, choices=PROTOCOLS,
        help="meshes: gt_mask (MeshPose's: the rendering masked by the GT dp_masks) or unmasked",
    )
    parser.add_argument("--uv-processed", default=None, help="DensePose's UV_Processed.mat, to render SMPL meshes")
    parser.add_argument("--write-results", default=None, help="write the evaluated detections, official layout")
    return parser.parse_args(argv)


def _evaluate_json(args: argparse.Namespace) -> dict:
    gt, results = _read_json(args.gt), _read_json(args.dt)
    if not isinstance(results, list):
        raise ResultsError(f"{args.dt}: expected a JSON list of results")
    if args.task == "keypoints":
        return evaluate_keypoints(gt, results)
    charts = _charts(args.body, args.uv_processed) if any(is_hmr_record(r) for r in results) else None
    written: list | None = [] if args.write_results else None
    out = evaluate_densepose(
        gt, results, _geodesic(args.body, args.eval_data), args.modes, args.kappa, charts=charts,
        protocol=args.protocol, source=args.dt, written=written,
    )
    if written is not None:
        Path(args.write_results).write_text(json.dumps(written))
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.task == "mesh":
        gt, pred = dict(np.load(args.gt)), dict(np.load(args.dt))
        needs_regressor = "joints" not in gt or "joints" not in pred
        out = evaluate_mesh(gt, pred, _regressor(args.regressor, args.body, needs_regressor), args.root)
    else:
        try:
            out = _evaluate_json(args)
        except ResultsError as exc:
            raise SystemExit(f"error: {exc}") from None
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return out


if __name__ == "__main__":
    main()
