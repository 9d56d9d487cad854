"""KeypointAP against pycocotools' COCOeval on randomized GT/detection sets."""

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densehmr.metrics import KeypointAP
from densehmr.metrics.coco_matching import STAT_NAMES


def random_keypoint_set(seed: int, with_bbox: bool):
    """A COCO keypoint GT dataset and results with crowds, unlabeled people, >20 detections per image,
    tied scores, images with only detections and images with nothing."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, 41):
        images.append({"id": image_id, "height": 480, "width": 640})
        n_gt = int(rng.integers(0, 6)) if image_id % 7 else 0
        for _ in range(n_gt):
            w, h = rng.uniform(10, 250, 2)
            x, y = rng.uniform(0, 300, 2)
            kp = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), rng.integers(0, 3, 17)], 1)
            if rng.random() < 0.15:
                kp[:, 2] = 0
            kp[kp[:, 2] == 0, :2] = 0
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": float(w * h * rng.uniform(0.4, 0.9)),
                    "iscrowd": int(rng.random() < 0.1),
                    "num_keypoints": int((kp[:, 2] > 0).sum()),
                    "keypoints": kp.reshape(-1).tolist(),
                }
            )
            if rng.random() < 0.8:
                noise = rng.uniform(0.005, 0.12) * np.sqrt(w * h)
                det = kp[:, :2] + rng.normal(0, noise, (17, 2))
                results.append((image_id, det, [x, y, w, h]))
        n_false = int(rng.integers(0, 4)) + (22 if image_id == 5 else 0)
        for _ in range(n_false):
            x, y = rng.uniform(0, 400, 2)
            det = rng.uniform(0, 1, (17, 2)) * rng.uniform(20, 200) + [x, y]
            results.append((image_id, det, [x, y, 50.0, 80.0]))
    dts = []
    for image_id, det, box in results:
        score = float(np.round(rng.random(), 1))  # many ties
        kp = np.concatenate([det, np.ones((17, 1))], 1).reshape(-1).tolist()
        d = {"image_id": image_id, "category_id": 1, "keypoints": kp, "score": score}
        if with_bbox:
            d["bbox"] = box
        dts.append(d)
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    return gt, dts


def pycocotools_stats(gt: dict, dts: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dts))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def ours(gt: dict, dts: list[dict], chunks: int = 3) -> np.ndarray:
    metric = KeypointAP()
    by_image_gt = {im["id"]: [] for im in gt["images"]}
    by_image_dt = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        by_image_gt[a["image_id"]].append(a)
    for d in dts:
        by_image_dt[d["image_id"]].append(d)
    images = gt["images"]
    step = -(-len(images) // chunks)
    for i in range(0, len(images), step):
        part = images[i : i + step]
        metric.update(part, [by_image_gt[im["id"]] for im in part], [by_image_dt[im["id"]] for im in part])
    out = metric.compute()
    return np.array([float(out[name.lower()]) for name in STAT_NAMES])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equals_pycocotools_on_random_sets(seed):
    gt, dts = random_keypoint_set(seed, with_bbox=bool(seed % 2))
    chunks = 3 if seed < 2 else len(gt["images"])  # one image per update: some hold no GT at all
    np.testing.assert_allclose(ours(gt, dts, chunks), pycocotools_stats(gt, dts), rtol=0, atol=1e-9)


def test_empty_area_range_reports_minus_one():
    gt, dts = random_keypoint_set(7, with_bbox=True)
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] > 96**2 or a["area"] < 32**2]
    expected = pycocotools_stats(gt, dts)
    assert expected[3] == -1
    np.testing.assert_allclose(ours(gt, dts), expected, rtol=0, atol=1e-9)


def test_crops_equal_pycocotools_on_one_person_images():
    """update_crops is COCOeval on images holding one person each, detected with its GT box at score 1."""
    rng = np.random.default_rng(11)
    b = 24
    gt_kp = torch.tensor(rng.uniform(20, 200, (b, 17, 3)))
    gt_kp[..., 2] = torch.tensor(rng.integers(0, 3, (b, 17)), dtype=torch.float64)
    gt_kp[3, :, 2] = 0
    pred = gt_kp.clone()
    pred[..., :2] += torch.tensor(rng.normal(0, 1, (b, 17, 2))) * torch.linspace(0.5, 30, b)[:, None, None]
    bbox = torch.tensor([[10.0, 15.0, 190.0, 200.0]]).repeat(b, 1)
    area = torch.tensor(rng.uniform(500, 30000, b))
    has = torch.ones(b, dtype=torch.bool)
    has[5] = False

    metric = KeypointAP()
    metric.update_crops(pred[:10].float(), gt_kp[:10].float(), bbox[:10], area[:10].float(), has[:10])
    metric.update_crops(pred[10:].float(), gt_kp[10:].float(), bbox[10:], area[10:].float(), has[10:])
    got = metric.compute()

    images = [{"id": i + 1} for i in range(b)]
    anns = [
        {
            "id": i + 1,
            "image_id": i + 1,
            "category_id": 1,
            "bbox": bbox[i].tolist(),
            "area": float(area[i].float()),
            "iscrowd": 0,
            "num_keypoints": int((gt_kp[i, :, 2] > 0).sum()) if has[i] else 0,
            "keypoints": gt_kp[i].float().double().reshape(-1).tolist(),
        }
        for i in range(b)
    ]
    dts = [
        {
            "image_id": i + 1,
            "category_id": 1,
            "score": 1.0,
            "bbox": bbox[i].tolist(),
            "keypoints": pred[i].float().double().reshape(-1).tolist(),
        }
        for i in range(b)
    ]
    expected = pycocotools_stats({"images": images, "annotations": anns, "categories": [{"id": 1}]}, dts)
    np.testing.assert_allclose([float(got[n.lower()]) for n in STAT_NAMES], expected, rtol=0, atol=1e-6)


def test_no_updates_gives_minus_one():
    out = KeypointAP().compute()
    assert float(out["ap"]) == -1 and float(out["ar"]) == -1
