"""DensePoseAP: hand-solved cases, and a literal per-point reference of DensePose's evaluator."""

import contextlib
import copy
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval
from scipy.ndimage import zoom

from densehmr.body.assets import COARSE_PARTS, GeodesicEval
from densehmr.body.densepose_files import DENSEPOSE_SMPL_MEAN_GEODESIC as SMPL_MEAN_GEODESIC
from densehmr.metrics import DensePoseAP
from densehmr.metrics.coco_matching import IOU_THRESHOLDS, STAT_NAMES
from densehmr.metrics.densepose_masks import gt_mask, paste, placed_iou

PART_UVS = np.array([[0.2, 0.2], [0.5, 0.8], [0.8, 0.3]])  # the evaluation points of every part


def make_geodesic(seed: int = 0):
    """3 evaluation points per part; distances between random 3D positions; a shuffled row transform.

    Returns the GeodesicEval and the (N, N) distance matrix indexed by evaluation point.
    """
    rng = np.random.default_rng(seed)
    n = 24 * len(PART_UVS)
    part = np.repeat(np.arange(1, 25), len(PART_UVS))
    uv = np.tile(PART_UVS, (24, 1))
    rows = rng.permutation(n)  # table row of each point
    pos = rng.uniform(0, 0.3, (n, 3))
    by_row = np.linalg.norm(pos[:, None] - pos[None], axis=-1)  # indexed by table row
    pdist = np.array([by_row[a, b] for b in range(n) for a in range(b)], dtype=np.float32)
    geo = GeodesicEval(
        point_part=torch.tensor(part),
        point_uv=torch.tensor(uv, dtype=torch.float32),
        point_face=torch.zeros(n, dtype=torch.long),
        point_bary=torch.full((n, 3), 1 / 3),
        pdist=torch.tensor(pdist),
        transform=torch.tensor(rows),
        mean_geodesic=torch.tensor(SMPL_MEAN_GEODESIC, dtype=torch.float32),
        coarse_parts=torch.tensor(COARSE_PARTS),
    )
    by_point = by_row[rows][:, rows].astype(np.float32).astype(np.float64)
    return geo, by_point


GEO, DIST = make_geodesic()


def full_dp_masks() -> list:
    full = np.asfortranarray(np.ones((256, 256), dtype=np.uint8))
    return [mask_utils.encode(full)] + [[] for _ in range(13)]


def person(box, points, ann_id=1, area=None):
    """A DensePose-COCO GT annotation; points: list of (dp_x, dp_y, part, eval point j of that part)."""
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": list(box),
        "area": float(box[2] * box[3]) if area is None else area,
        "dp_x": [p[0] for p in points],
        "dp_y": [p[1] for p in points],
        "dp_I": [float(p[2]) for p in points],
        "dp_U": [PART_UVS[p[3], 0] for p in points],
        "dp_V": [PART_UVS[p[3], 1] for p in points],
        "dp_masks": full_dp_masks(),
    }


def pixel(gt_box, det_box, dp_x, dp_y):
    """The spec's mapping of a GT point into the detection's box."""
    return (
        int(dp_x * gt_box[2] / 255.0 + gt_box[0] - det_box[0]),
        int(dp_y * gt_box[3] / 255.0 + gt_box[1] - det_box[1]),
    )


def iuv_for(gt_box, det_box, points, uv_of=lambda p: PART_UVS[p[3]], fill_part=1):
    """A detection map (3, int(h), int(w)) uint8 showing part `fill_part` with the given UV at GT points."""
    w, h = int(det_box[2]), int(det_box[3])
    iuv = np.zeros((3, h, w), dtype=np.uint8)
    iuv[0] = fill_part
    for p in points:
        px, py = pixel(gt_box, det_box, p[0], p[1])
        if 0 <= px < w and 0 <= py < h:
            u, v = uv_of(p)
            iuv[:, py, px] = (p[2], round(u * 255), round(v * 255))
    return iuv


def grid_points(n=40, seed=0, box=(10.0, 20.0, 100.0, 200.0)):
    """GT points on distinct pixels of the box."""
    rng = np.random.default_rng(seed)
    pts, used = [], set()
    while len(pts) < n:
        x, y = float(rng.integers(3, 250)) + 0.3, float(rng.integers(3, 250)) + 0.3
        key = pixel(box, box, x, y)
        if key in used:
            continue
        used.add(key)
        pts.append((x, y, int(rng.integers(1, 25)), int(rng.integers(0, 3))))
    return pts


BOX = (10.0, 20.0, 100.0, 200.0)
IMAGE = {"id": 1, "height": 300, "width": 300}


def stats(metric) -> dict:
    return {k: float(v) for k, v in metric.compute().items()}


def ap_of_single(score: float) -> float:
    """AP of one image with one GT and one detection of this similarity: thresholds it reaches / 10."""
    return sum(score >= min(t, 1 - 1e-10) for t in IOU_THRESHOLDS) / len(IOU_THRESHOLDS)


def test_perfect_prediction_scores_one():
    pts = grid_points()
    det = {"bbox": list(BOX), "score": 0.9, "iuv": iuv_for(BOX, BOX, pts)}
    metric = DensePoseAP(GEO)
    metric.update([IMAGE], [[person(BOX, pts)]], [[det]])
    out = stats(metric)
    for mode in ("gps", "gpsm", "iou"):
        for name in ("ap", "ap50", "ap75", "apl", "ar", "ar50", "ar75", "arl"):
            assert out[f"{mode}_{name}"] == pytest.approx(1.0, abs=1e-12), (mode, name)
        assert out[f"{mode}_apm"] == -1 and out[f"{mode}_arm"] == -1  # no medium GT


@pytest.mark.parametrize("kappa", ["per_part", "fixed"])
def test_shifted_points_give_hand_computed_gps(kappa):
    pts = grid_points(seed=1)
    shifted = {i for i in range(len(pts)) if i % 3 == 0}
    # Every third point is predicted on the next evaluation point of its part.
    uv_of = {id(p): PART_UVS[(p[3] + 1) % 3] if i in shifted else PART_UVS[p[3]] for i, p in enumerate(pts)}
    det = {"bbox": list(BOX), "score": 0.9, "iuv": iuv_for(BOX, BOX, pts, uv_of=lambda p: uv_of[id(p)])}
    terms = []
    for i, (_, _, part, j) in enumerate(pts):
        gt_point = (part - 1) * 3 + j
        pred_point = (part - 1) * 3 + ((j + 1) % 3 if i in shifted else j)
        k = SMPL_MEAN_GEODESIC[COARSE_PARTS[part]] if kappa == "per_part" else 0.255
        terms.append(math.exp(-(DIST[gt_point, pred_point] ** 2) / (2 * k * k)))
    expected = sum(terms) / len(terms)
    assert min(abs(expected - t) for t in IOU_THRESHOLDS) > 1e-6

    metric = DensePoseAP(GEO, modes=("gps",), kappa=kappa)
    gps = metric.pair_similarity([IMAGE], [[person(BOX, pts)]], [[det]])
    assert float(gps[0, 0, 0, 0]) == pytest.approx(expected, abs=1e-12)
    metric.update([IMAGE], [[person(BOX, pts)]], [[det]])
    assert stats(metric)["gps_ap"] == pytest.approx(ap_of_single(expected), abs=1e-12)


def test_background_prediction_scores_zero():
    pts = grid_points()
    det = {"bbox": list(BOX), "score": 0.9, "iuv": np.zeros((3, 200, 100), dtype=np.uint8)}
    metric = DensePoseAP(GEO)
    assert float(metric.pair_similarity([IMAGE], [[person(BOX, pts)]], [[det]]).abs().max()) == 0
    metric.update([IMAGE], [[person(BOX, pts)]], [[det]])
    out = stats(metric)
    assert out["gps_ap"] == 0 and out["gps_ar"] == 0 and out["gpsm_ap"] == 0


def test_points_outside_the_detection_box_score_zero():
    pts = grid_points(seed=2)
    narrow = (BOX[0], BOX[1], 50.7, BOX[3])  # int(w) = 50 columns
    det = {"bbox": list(narrow), "score": 0.9, "iuv": iuv_for(BOX, narrow, pts)}
    inside = sum(0 <= pixel(BOX, narrow, p[0], p[1])[0] < 50 for p in pts)
    assert 0 < inside < len(pts)
    gps = DensePoseAP(GEO, modes=("gps",)).pair_similarity([IMAGE], [[person(BOX, pts)]], [[det]])
    assert float(gps[0, 0, 0, 0]) == pytest.approx(inside / len(pts), abs=1e-12)


def test_mask_modes_on_half_covered_box():
    """GT mask = the whole box (dp_masks all on); prediction covers the left half: IoU 1/2.

    (A 96×192 box: zooming 256 to 200 rows, scipy's zoom, and so DensePose's evaluator, loses the last row.)
    """
    box = (10.0, 20.0, 96.0, 192.0)
    pts = [p for p in grid_points(80, seed=3, box=box) if pixel(box, box, p[0], p[1])[0] < 48][:20]
    iuv = iuv_for(box, box, pts)
    iuv[0, :, 48:] = 0
    det = {"bbox": list(box), "score": 0.9, "iuv": iuv}
    metric = DensePoseAP(GEO)
    sim = metric.pair_similarity([IMAGE], [[person(box, pts)]], [[det]])[0, :, 0, 0]
    assert sim.tolist() == pytest.approx([1.0, math.sqrt(0.5), 0.5], abs=1e-12)
    metric.update([IMAGE], [[person(box, pts)]], [[det]])
    out = stats(metric)
    assert out["gpsm_ap"] == pytest.approx(ap_of_single(math.sqrt(0.5))) == pytest.approx(0.5)
    assert out["iou_ap"] == pytest.approx(0.1)


def test_detection_on_a_gt_without_points_is_ignored():
    """A high-scoring detection on an un-annotated person (box IoU >= 0.8) is not a false positive,
    nor is a detection in an image whose GT are all ignored."""
    pts = grid_points(seed=4)
    other_box = (150.0, 40.0, 90.0, 180.0)
    unannotated = {k: v for k, v in person(other_box, [], ann_id=2).items() if not k.startswith("dp_")}
    good = {"bbox": list(BOX), "score": 0.5, "iuv": iuv_for(BOX, BOX, pts)}
    on_other = {
        "bbox": [151.0, 41.0, 89.0, 178.0],
        "score": 0.9,
        "iuv": np.ones((3, 178, 89), dtype=np.uint8),
    }
    stray = {"bbox": [5.0, 5.0, 60.0, 60.0], "score": 0.95, "iuv": np.ones((3, 60, 60), dtype=np.uint8)}
    image2 = {"id": 2, "height": 300, "width": 300}
    metric = DensePoseAP(GEO, modes=("gps",))
    metric.update(
        [IMAGE, image2], [[person(BOX, pts), unannotated], [unannotated]], [[good, on_other], [stray]]
    )
    assert stats(metric)["gps_ap"] == pytest.approx(1.0)

    # Without the un-annotated GT, the same detection is a false positive ranked first.
    metric = DensePoseAP(GEO, modes=("gps",))
    metric.update([IMAGE], [[person(BOX, pts)]], [[good, on_other]])
    assert stats(metric)["gps_ap"] == pytest.approx(0.5)


def test_crops_perfect_and_background():
    b, h, w, p = 3, 64, 48, 30
    rng = np.random.default_rng(5)
    bbox = torch.tensor([[4.0, 6.0, 40.0, 52.0]] * b)
    cells = np.stack([rng.choice(38 * 50, p, replace=False) for _ in range(b)])  # distinct pixels
    xy = torch.tensor(np.stack([5 + cells % 38, 7 + cells // 38], -1) + 0.3)
    part = torch.tensor(rng.integers(1, 25, (b, p)))
    j = torch.tensor(rng.integers(0, 3, (b, p)))
    uv = torch.tensor(PART_UVS)[j]
    iuv = torch.zeros(b, 3, h, w)
    iuv[:, 0] = 1.0
    rows, cols = xy[..., 1].long(), xy[..., 0].long()
    for i in range(b):
        iuv[i, 0, rows[i], cols[i]] = part[i].float()
        iuv[i, 1, rows[i], cols[i]] = uv[i, :, 0].float()
        iuv[i, 2, rows[i], cols[i]] = uv[i, :, 1].float()
    iuv[2] = 0  # background everywhere
    gt_mask = torch.zeros(b, h, w, dtype=torch.bool)
    gt_mask[:, 6:58, 4:44] = True
    valid = torch.ones(b, p, dtype=torch.bool)
    has_dp = torch.tensor([True, True, False])  # the background crop has no annotation: ignored
    metric = DensePoseAP(GEO)
    metric.update_crops(
        iuv, xy.float(), part.float(), uv[..., 0].float(), uv[..., 1].float(), valid, gt_mask, bbox, has_dp
    )
    out = stats(metric)
    assert out["gps_ap"] == pytest.approx(1.0) and out["gpsm_ap"] == pytest.approx(1.0)
    metric.reset()
    has_dp[2] = True
    metric.update_crops(
        iuv, xy.float(), part.float(), uv[..., 0].float(), uv[..., 1].float(), valid, gt_mask, bbox, has_dp
    )
    out = stats(metric)
    # Two perfect crops and one at GPS 0, all with score 1 in crop order: precision 1 up to recall 2/3.
    assert out["gps_ar"] == pytest.approx(2 / 3)
    assert out["gps_ap"] == pytest.approx(67 / 101)


def official_mask_iou(det_box, det_mask, ann, image_hw, crowd=0) -> float:
    """DensePose's evaluator's way: zoom dp_masks, paste both on a full image canvas, pycocotools IoU."""

    def canvas(mask, box):
        im = np.zeros(image_hw, dtype=np.uint8)
        x, y, w, h = box
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1 = min(int(x + w), image_hw[1], int(x) + mask.shape[1])
        y1 = min(int(y + h), image_hw[0], int(y) + mask.shape[0])
        if x1 > x0 and y1 > y0:
            im[y0:y1, x0:x1] = mask[y0 - int(y) : y1 - int(y), x0 - int(x) : x1 - int(x)]
        return mask_utils.encode(np.asfortranarray(im))

    union = np.zeros((256, 256))
    for m in ann["dp_masks"]:
        if m:
            union[mask_utils.decode(m) > 0] = 1
    _, _, w, h = ann["bbox"]
    gmask = zoom(union, (max(h, 1) / 256, max(w, 1) / 256), order=1, prefilter=False) > 0.5
    gt_rle = canvas(gmask.astype(np.uint8), ann["bbox"])
    return float(mask_utils.iou([canvas(det_mask, det_box)], [gt_rle], [crowd])[0, 0])


def test_mask_iou_equals_pycocotools_on_image_canvas():
    rng = np.random.default_rng(6)
    for _ in range(25):
        hw = (int(rng.integers(80, 200)), int(rng.integers(80, 200)))
        gbox = [float(v) for v in rng.uniform(-20, 100, 2)] + [float(v) for v in rng.uniform(20, 150, 2)]
        dbox = [
            gbox[0] + float(rng.uniform(-15, 15)),
            gbox[1] + float(rng.uniform(-15, 15)),
            gbox[2] * float(rng.uniform(0.7, 1.3)),
            gbox[3] * float(rng.uniform(0.7, 1.3)),
        ]
        masks = []
        for _ in range(14):
            if rng.random() < 0.5:
                masks.append([])
                continue
            m = np.zeros((256, 256), dtype=np.uint8)
            r0, c0 = rng.integers(0, 200, 2)
            m[r0 : r0 + rng.integers(10, 120), c0 : c0 + rng.integers(10, 120)] = 1
            masks.append(mask_utils.encode(np.asfortranarray(m)))
        ann = {"bbox": gbox, "dp_masks": masks}
        dmask = rng.random((int(dbox[3]), int(dbox[2]))) < 0.6
        ours = placed_iou(paste(torch.from_numpy(dmask), dbox, hw), gt_mask(ann, hw), crowd=False)
        assert float(ours) == pytest.approx(
            official_mask_iou(dbox, dmask.astype(np.uint8), ann, hw), abs=1e-12
        )


# ---------------------------------------------------------------------------------------------
# A literal, loop-per-point reference of DensePose's evaluator (written from its documented
# semantics), accumulated and summarized by pycocotools' COCOeval.


def ref_nearest(part, u, v):
    if not (part == int(part) and 1 <= part <= 24):
        return None
    ids = np.flatnonzero(GEO.point_part.numpy() == int(part))
    uvs = GEO.point_uv.numpy().astype(np.float64)[ids]
    return int(ids[np.argmin(np.sqrt((uvs[:, 0] - u) ** 2 + (uvs[:, 1] - v) ** 2))])


def ref_gps(gt, dt):
    gx, gy, gw, gh = gt["bbox"]
    dx, dy, dw, dh = dt["bbox"]
    iuv = dt["iuv"]
    values = []
    for x, y, part, u, v in zip(gt["dp_x"], gt["dp_y"], gt["dp_I"], gt["dp_U"], gt["dp_V"], strict=True):
        g = ref_nearest(part, u, v)
        if g is None:
            continue
        px, py = int(x * gw / 255.0 + gx - dx), int(y * gh / 255.0 + gy - dy)
        p = None
        if 0 <= px < int(dw) and 0 <= py < int(dh) and iuv[0, py, px] > 0:
            p = ref_nearest(int(iuv[0, py, px]), iuv[1, py, px] / 255.0, iuv[2, py, px] / 255.0)
        d = math.inf if p is None else DIST[g, p]
        k = SMPL_MEAN_GEODESIC[COARSE_PARTS[int(part)]]
        values.append(math.exp(-d * d / (2 * k * k)))
    return float(np.mean(values)) if values else 0.0


def ref_evaluate_image(image, gts, dts, a_rng, mode):
    if not gts and not dts:
        return None
    dts = sorted(dts, key=lambda d: -d["score"])[:20]
    hw = (image["height"], image["width"])
    crowd = [int(g.get("iscrowd", 0)) for g in gts]
    gps = np.array([[ref_gps(g, d) if "dp_x" in g else 0.0 for g in gts] for d in dts]).reshape(
        len(dts), len(gts)
    )
    miou = np.array(
        [
            [
                official_mask_iou(d["bbox"], (d["iuv"][0] > 0).astype(np.uint8), g, hw, c)
                for g, c in zip(gts, crowd, strict=True)
            ]
            for d in dts
        ]
    ).reshape(len(dts), len(gts))
    sim = {"gps": gps, "gpsm": np.sqrt(gps * miou), "iou": miou}[mode]
    boxes = mask_utils.iou([d["bbox"] for d in dts], [g["bbox"] for g in gts], crowd) if dts and gts else None
    ig = [("dp_x" not in g) or g["area"] < a_rng[0] or g["area"] > a_rng[1] for g in gts]
    order = sorted(range(len(gts)), key=lambda i: ig[i])  # ignored last, stable
    t_count = len(IOU_THRESHOLDS)
    gtm = np.zeros((t_count, len(gts)))
    dtm = np.zeros((t_count, len(dts)))
    dt_ig = np.zeros((t_count, len(dts)), dtype=bool)
    if all(ig):
        dt_ig[:] = True
    if dts and gts:
        for ti, t in enumerate(IOU_THRESHOLDS):
            for di in range(len(dts)):
                best, m = min(t, 1 - 1e-10), -1
                for gi in order:
                    if gtm[ti, gi] and not crowd[gi]:
                        continue
                    if m > -1 and not ig[m] and ig[gi]:
                        break
                    if sim[di, gi] < best or sim[di, gi] == 0:
                        continue
                    best, m = sim[di, gi], gi
                if m > -1:
                    dt_ig[ti, di] = ig[m]
                    dtm[ti, di] = m + 1
                    gtm[ti, m] = di + 1
        last = t_count - 1
        for di in range(len(dts)):
            if dtm[last, di]:
                continue
            best, m = 0.8, -1
            for gi in order:
                if gtm[last, gi] and not crowd[gi]:
                    continue
                if boxes[di, gi] < best:
                    continue
                best, m = boxes[di, gi], gi
            if m > -1:
                dt_ig[:, di] = ig[m]
                if ig[m]:
                    dtm[last, di] = m + 1
                    gtm[last, m] = di + 1
    out_area = np.array(
        [d["bbox"][2] * d["bbox"][3] < a_rng[0] or d["bbox"][2] * d["bbox"][3] > a_rng[1] for d in dts],
        dtype=bool,
    )
    dt_ig = dt_ig | ((dtm == 0) & out_area[None, :])
    return {
        "dtScores": [d["score"] for d in dts],
        "dtMatches": dtm,
        "dtIgnore": dt_ig,
        "gtIgnore": np.array(ig, dtype=bool),
    }


def ref_stats(images, gts, dts, mode):
    ev = COCOeval(iouType="keypoints")
    p = ev.params
    p.imgIds, p.catIds = sorted(im["id"] for im in images), [1]
    by_id = {im["id"]: i for i, im in enumerate(images)}
    ev.evalImgs = [
        ref_evaluate_image(images[by_id[i]], gts[by_id[i]], dts[by_id[i]], a, mode)
        for a in p.areaRng
        for i in p.imgIds
    ]
    ev._paramsEval = copy.deepcopy(p)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    return ev.stats


def random_densepose_set(seed):
    rng = np.random.default_rng(seed)
    images, gts, dts = [], [], []
    for image_id in rng.permutation(np.arange(1, 13)).tolist():
        hw = (240, 320)
        images.append({"id": image_id, "height": hw[0], "width": hw[1]})
        anns, dets = [], []
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(15, 160), rng.uniform(15, 200)
            box = [float(rng.uniform(-10, 250)), float(rng.uniform(-10, 150)), float(w), float(h)]
            ann = {
                "id": len(anns) + 1,
                "bbox": box,
                "area": float(w * h * rng.uniform(0.3, 0.9)),
                "iscrowd": int(rng.random() < 0.1),
            }
            if rng.random() < 0.8:
                n = 15
                ann.update(
                    dp_x=rng.uniform(0, 255, n).tolist(),
                    dp_y=rng.uniform(0, 255, n).tolist(),
                    dp_I=rng.integers(1, 25, n).astype(float).tolist(),
                    dp_U=rng.random(n).tolist(),
                    dp_V=rng.random(n).tolist(),
                )
            masks = []
            for _ in range(14):
                m = np.zeros((256, 256), dtype=np.uint8)
                if rng.random() < 0.4:
                    r0, c0 = rng.integers(0, 200, 2)
                    m[r0 : r0 + rng.integers(20, 150), c0 : c0 + rng.integers(20, 150)] = 1
                    masks.append(mask_utils.encode(np.asfortranarray(m)))
                else:
                    masks.append([])
            ann["dp_masks"] = masks
            anns.append(ann)
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.05 * min(w, h), 4) if rng.random() < 0.7 else np.zeros(4)
                dbox = [
                    box[0] + jitter[0],
                    box[1] + jitter[1],
                    max(w + jitter[2], 5.0),
                    max(h + jitter[3], 5.0),
                ]
                dets.append(detection_near(rng, ann, [float(v) for v in dbox]))
        for _ in range(int(rng.integers(0, 3))):
            dbox = [float(v) for v in rng.uniform(0, 200, 2)] + [float(v) for v in rng.uniform(10, 120, 2)]
            dets.append(detection_near(rng, None, dbox))
        gts.append(anns)
        dts.append(dets)
    return images, gts, dts


def detection_near(rng, ann, dbox):
    """A detection whose map shows the GT's labels (noisily) where its points fall, random elsewhere."""
    h, w = int(dbox[3]), int(dbox[2])
    iuv = np.stack([rng.integers(0, 25, (h, w)), rng.integers(0, 256, (h, w)), rng.integers(0, 256, (h, w))])
    iuv[0][rng.random((h, w)) < 0.2] = 0
    if ann is not None:  # foreground roughly where the GT's mask is
        union = np.zeros((256, 256), dtype=bool)
        for m in ann["dp_masks"]:
            if m:
                union |= mask_utils.decode(m) > 0
        rows = np.clip(((np.arange(h) + dbox[1] - ann["bbox"][1]) * 256 / ann["bbox"][3]).astype(int), 0, 255)
        cols = np.clip(((np.arange(w) + dbox[0] - ann["bbox"][0]) * 256 / ann["bbox"][2]).astype(int), 0, 255)
        iuv[0][~union[rows][:, cols] & (rng.random((h, w)) < 0.95)] = 0
    if ann is not None and "dp_x" in ann:
        for x, y, part, u, v in zip(
            ann["dp_x"], ann["dp_y"], ann["dp_I"], ann["dp_U"], ann["dp_V"], strict=True
        ):
            px = int(x * ann["bbox"][2] / 255.0 + ann["bbox"][0] - dbox[0])
            py = int(y * ann["bbox"][3] / 255.0 + ann["bbox"][1] - dbox[1])
            if 0 <= px < w and 0 <= py < h and rng.random() < 0.85:
                iuv[:, py, px] = (
                    part,
                    np.clip(u * 255 + rng.normal(0, 40), 0, 255),
                    np.clip(v * 255 + rng.normal(0, 40), 0, 255),
                )
    return {"bbox": dbox, "score": float(np.round(rng.random(), 1)), "iuv": iuv.astype(np.uint8)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_literal_reference_on_random_sets(seed):
    images, gts, dts = random_densepose_set(seed)
    metric = DensePoseAP(GEO)
    step = 6 if seed else 1  # one image per update: some hold no GT at all
    for i in range(0, len(images), step):
        metric.update(images[i : i + step], gts[i : i + step], dts[i : i + step])
    out = stats(metric)
    for mode in ("gps", "gpsm", "iou"):
        expected = ref_stats(images, gts, dts, mode)
        got = [out[f"{mode}_{name.lower()}"] for name in STAT_NAMES]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=mode)
