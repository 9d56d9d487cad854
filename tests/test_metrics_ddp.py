"""All metrics under DDP: two CPU processes (gloo) on split data give the numbers of one process on all."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_metrics_densepose_ap import GEO, random_densepose_set
from test_metrics_keypoint_ap import random_keypoint_set

from densehmr.metrics import DensePoseAP, KeypointAP, MaskIoU, MeshError


def keypoint_inputs():
    gt, dts = random_keypoint_set(3, with_bbox=True)
    images = gt["images"]
    gts = [[a for a in gt["annotations"] if a["image_id"] == im["id"]] for im in images]
    dets = [[d for d in dts if d["image_id"] == im["id"]] for im in images]
    return images, gts, dets


def crop_inputs():
    g = torch.Generator().manual_seed(0)
    b = 10
    gt_kp = torch.rand(b, 17, 3, generator=g) * 100
    gt_kp[..., 2] = 2
    pred_kp = gt_kp + torch.randn(b, 17, 3, generator=g) * torch.linspace(0.5, 20, b)[:, None, None]
    bbox = torch.tensor([[5.0, 5.0, 100.0, 110.0]]).repeat(b, 1)
    return pred_kp, gt_kp, bbox, torch.full((b,), 6000.0), torch.ones(b, dtype=torch.bool), torch.arange(b)


def mesh_inputs():
    g = torch.Generator().manual_seed(1)
    reg = torch.rand(17, 30, generator=g, dtype=torch.float64)
    reg = reg / reg.sum(1, keepdim=True)
    gt = torch.randn(9, 30, 3, generator=g, dtype=torch.float64)
    return reg, gt + 0.05 * torch.randn(9, 30, 3, generator=g, dtype=torch.float64), gt


def mask_inputs():
    g = torch.Generator().manual_seed(2)
    return torch.rand(9, 8, 8, generator=g) > 0.5, torch.rand(9, 8, 8, generator=g) > 0.5


def run_metrics(parts: list[slice]) -> dict[str, float]:
    """All metrics over the given parts of every data set (one process)."""
    kp_ap, kp_crops, dp_ap = KeypointAP(), KeypointAP(), DensePoseAP(GEO)
    reg, pred_v, gt_v = mesh_inputs()
    mesh, mask = MeshError(reg), MaskIoU()
    images, gts, dets = keypoint_inputs()
    dp_images, dp_gts, dp_dets = random_densepose_set(0)
    crops = crop_inputs()
    pred_m, gt_m = mask_inputs()
    for s in parts:
        kp_ap.update(images[s], gts[s], dets[s])
        dp_ap.update(dp_images[s], dp_gts[s], dp_dets[s])
        kp_crops.update_crops(*(t[s] for t in crops))
        mesh.update(pred_verts=pred_v[s], gt_verts=gt_v[s])
        mask.update(pred_m[s], gt_m[s])
    out = {f"kp/{k}": float(v) for k, v in kp_ap.compute().items()}
    out |= {f"kpcrop/{k}": float(v) for k, v in kp_crops.compute().items()}
    out |= {f"dp/{k}": float(v) for k, v in dp_ap.compute().items()}
    out |= {f"mesh/{k}": float(v) for k, v in mesh.compute().items()}
    out["mask/iou"] = float(mask.compute())
    return out


def worker(rank: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    # Uneven, interleaved shares: rank 0 holds items 0-2 and 7-, rank 1 items 3-6.
    parts = [slice(0, 3), slice(7, None)] if rank == 0 else [slice(3, 7)]
    out = run_metrics(parts)
    if rank == 0:
        with open(path, "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "ddp.json"
    mp.spawn(worker, args=(port, str(path)), nprocs=2, join=True)
    got = json.loads(path.read_text())
    expected = run_metrics([slice(None)])
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert np.isclose(got[key], value, rtol=0, atol=1e-12), (key, got[key], value)
    assert expected["dp/gps_ap"] > 0 and expected["kp/ap"] > 0 and expected["kpcrop/ap"] > 0
