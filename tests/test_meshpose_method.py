"""MeshPose as a method on the open body: pixel-space targets and metric lifting, prediction of a known
mesh, which parameters each loss term trains, ablations as config, pictures, and a 16-sample overfit."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from batch_factory import make_batch
from method_factory import make_method
from omegaconf import OmegaConf

from densehmr.methods.meshpose import MeshPose, MeshPoseTargets, _to_pixel_space

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WEIGHTS = dict(OmegaConf.load(CONFIGS / "method" / "meshpose.yaml").method.module.loss_weights)
SIZE = (64, 64)
# The regression branch needs enough hidden channels: each vertex mixes them into its bin logits.
SMALL = dict(neck_channels=32, lifting_hidden=64, lifting_bins=32)
GROUPS = {
    "l3d": {"vertex", "edge", "normal", "joints2d", "joints3d"},
    "l2d": {"barycentric", "consistency", "mask"},
    "lw": {"visibility", "rendering"},
}


def build(weights: dict | None = None, **options) -> MeshPose:
    return make_method("meshpose", "log_images_every_n_steps=0", image_size=SIZE, loss_weights=weights,
                       **{**SMALL, **options})


@pytest.fixture(scope="module")
def model(body) -> MeshPose:
    return build()


@pytest.fixture(scope="module")
def batch(body) -> dict:
    return make_batch(body, n=4, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def gt(model, batch) -> MeshPoseTargets:
    return model.targets(batch)


def _gt_output(model: MeshPose, batch: dict, gt: MeshPoseTargets) -> dict:
    """A network output whose fused vertices are the ground truth."""
    return {**model(batch["image"]), "verts_low": gt.verts_low}


# ----------------------------------------------------------------------------- spaces and scale
def test_pixel_space_round_trips_through_to_camera_with_the_gt_root(body, batch, gt):
    m = build(metric_scale="gt_root")
    focal, principal, _ = m._focal_principal(batch)
    full_px = _to_pixel_space(gt.verts, gt.root_depth, focal, principal)
    back = m.to_camera(full_px, gt.verts_low, batch, gt)
    torch.testing.assert_close(back, gt.verts, atol=1e-4, rtol=0)


def test_samples_with_a_part_near_the_camera_get_no_pixel_space_targets(body, batch, gt):
    """A truncated close-up (its nearest point at ~0.1 x the root depth) would project to huge pixels: such a sample
    is left out of the 3D terms, the others keep theirs."""
    m = build()
    verts = gt.verts.clone()
    root = gt.root_depth[0]
    z = verts[0, :, 2]
    verts[0, :, 2] = root + (z - root) * 0.9 * root / (root - z.min())  # stretched towards the camera
    close = m.pixel_targets(batch, verts)
    assert not close.has_verts[0] and close.has_verts[1:].equal(gt.has_verts[1:])
    loss = m.loss_terms(m(batch["image"]), batch, close)["vertex"]
    assert torch.isfinite(loss) and loss.item() < 10.0


def test_template_scale_recovers_the_body_size(model, batch, gt):
    focal, principal, _ = model._focal_principal(batch)
    full_px = _to_pixel_space(gt.verts, gt.root_depth, focal, principal)
    est = model.to_camera(full_px, gt.verts_low, batch, gt)
    size = lambda v: (v - v.mean(1, keepdim=True)).norm(dim=-1).mean(1)  # noqa: E731
    ratio = size(est) / size(gt.verts)
    assert ((ratio - 1).abs() < 0.1).all(), ratio  # shapes vary about the mean template by a few percent


def test_landmarks_of_the_pixel_space_target_match_the_batch_keypoints(model, batch, gt):
    kp = torch.einsum("jv,bvc->bjc", model.landmark_coco, gt.verts_low[..., :2])
    err = (kp - batch["kp2d"][..., :2]).norm(dim=-1)
    assert err.mean() < 1.0, err.mean()  # px in a 64 px crop
    joints = torch.einsum("jv,bvc->bjc", model.landmark_h36m, gt.verts_low)
    joints = joints - joints[:, :1]
    assert (joints - gt.joints3d).norm(dim=-1).mean() < 1.0


def test_predicting_the_gt_mesh_renders_the_gt_densepose(model, batch, gt):
    m = build(metric_scale="gt_root")
    pred = m.predict(_gt_output(m, batch, gt), batch, gt)
    assert pred.iuv.shape == (4, 3, *SIZE)
    assert pred.kp2d.shape == (4, 17, 3) and pred.verts.shape == gt.verts.shape
    assert (pred.verts - gt.verts).norm(dim=-1).mean() < 0.01  # metres: upsampler residual
    valid = batch["dp_valid"]
    xy = batch["dp_xy"].long()
    b = torch.arange(4)[:, None].expand_as(valid)
    part = pred.iuv[b, 0, xy[..., 1], xy[..., 0]]
    agree = (part == batch["dp_I"]).float()[valid].mean()
    assert agree > 0.9, agree
    iou = ((pred.mask > 0) & (batch["mask"] > 0)).sum() / ((pred.mask > 0) | (batch["mask"] > 0)).sum()
    assert iou > 0.9, iou
    vp = pred.extra_iuv["vertexpose/densepose"]
    assert vp.shape == (4, 3, *SIZE) and vp[:, 0].max() <= 24


def test_vertexpose_densepose_of_ideal_heatmaps_matches_the_annotations(model, batch, gt):
    """Logits that are the log-barycentrics of the GT low-poly surface at each cell decode (through the
    resizing and the mask) to the annotated parts. Cells are crop pixels here: at a 64 px crop's 16 x 16
    heatmaps, limbs are a cell wide and resolution, not decoding, would dominate the comparison."""
    from densehmr.render import rasterize

    low = gt.verts_low
    screen = torch.cat([low[..., :2], low[..., 2:] - low[..., 2:].amin(1, keepdim=True) + 1.0], -1)
    frags = rasterize(screen, model.faces_low, SIZE, perspective_correct=False)
    logits = torch.full((4, *SIZE, low.shape[1]), -20.0)  # (B, H, W, v)
    corners = model.faces_low[frags.face_idx.clamp(min=0)]  # (B, h, w, 3)
    logits.scatter_(-1, corners, frags.bary.clamp(min=1e-4).log())
    out = {"heatmaps": logits.permute(0, 3, 1, 2), "mask_logits": torch.where(frags.mask, 10.0, -10.0)[:, None]}
    iuv = model.vertexpose_iuv(out, SIZE)
    valid = batch["dp_valid"]
    xy = batch["dp_xy"].long()
    b = torch.arange(4)[:, None].expand_as(valid)
    part = iuv[b, 0, xy[..., 1], xy[..., 0]]
    assert (part == batch["dp_I"]).float()[valid].mean() > 0.85


@pytest.mark.parametrize("mode", ["barycentric", "closest", "global_average"])
def test_uv_decoding_modes_from_config(body, batch, mode):
    m = build(uv_decoding=mode)
    out = m(batch["image"])
    out["mask_logits"] = torch.full_like(out["mask_logits"], 5.0)  # everything foreground
    iuv = m.vertexpose_iuv(out, SIZE)
    assert (iuv[:, 0] >= 1).all() and (iuv[:, 1:] >= 0).all() and (iuv[:, 1:] <= 1).all()


def test_vertexpose_foreground_is_the_mask_probability_above_the_threshold(body, batch):
    out = build()(batch["image"])
    out["mask_logits"] = torch.full_like(out["mask_logits"], math.log(0.35 / 0.65))  # P(person) = 0.35
    background = build(mask_threshold=0.5).vertexpose_iuv(out, SIZE)
    foreground = build(mask_threshold=0.3).vertexpose_iuv(out, SIZE)
    assert (background == 0).all() and (foreground[:, 0] >= 1).all()


def test_bad_options_are_refused(body):
    with pytest.raises(ValueError):
        build(uv_decoding="nearest")
    with pytest.raises(ValueError):
        build(metric_scale="guess")
    with pytest.raises(ValueError):
        build(visibility_labels="all")
    with pytest.raises(ValueError, match="mask_threshold"):
        build(mask_threshold=0.0)


def test_occlusion_labels_hide_the_far_side_of_the_gt_body_and_none_of_the_annotated_faces(body, batch, gt):
    """The z-buffered GT body hides about half of its vertices (the side facing away), and almost none of the
    corners of the faces the generator annotated as seen (its own rendering, independent of ours)."""
    model = build(visibility_labels="occlusion")
    hidden = model._self_occluded(batch, gt)[gt.has_verts]
    assert gt.has_verts.any() and 0.25 < hidden.float().mean() < 0.75
    valid = (batch["dp_valid"] & batch["has_dp"][:, None] & (batch["dp_face_low"] >= 0))[gt.has_verts]
    corners = model.faces_low[batch["dp_face_low"][gt.has_verts].clamp(min=0)]  # (n, P, 3)
    annotated_hidden = hidden.gather(1, corners.flatten(1)).view_as(corners)[valid]
    assert annotated_hidden.float().mean() < 0.1


# ----------------------------------------------------------------------------- gradients
def _grad_norms(m: MeshPose) -> dict[str, float]:
    groups = {
        "heatmap": m.vertexpose.heatmap,
        "mask_head": m.mask_head,
        "axes": m.lifting.axes,
        "visibility": m.lifting.visibility,
        "backbone": m.backbone,
    }
    out = {}
    for name, module in groups.items():
        grads = [p.grad.abs().sum() for p in module.parameters() if p.grad is not None]
        out[name] = float(sum(grads)) if grads else 0.0
    return out


# Which parameter groups each term must reach (True) and must not (False).
ROUTES = {
    "barycentric": dict(heatmap=True, backbone=True, mask_head=False, axes=False, visibility=False),
    "consistency": dict(heatmap=True, backbone=True, mask_head=False, axes=False, visibility=False),
    "mask": dict(mask_head=True, backbone=True, heatmap=False, axes=False, visibility=False),
    "visibility": dict(visibility=True, backbone=True, heatmap=False, mask_head=False, axes=False),
    "rendering": dict(visibility=True, backbone=True, heatmap=False, mask_head=False, axes=False),
    "vertex": dict(axes=True, heatmap=True, visibility=True, backbone=True, mask_head=False),
    "edge": dict(axes=True, heatmap=True, visibility=True, mask_head=False),
    "normal": dict(axes=True, heatmap=True, visibility=True, mask_head=False),
    "joints2d": dict(heatmap=True, visibility=True, mask_head=False),
    "joints3d": dict(axes=True, heatmap=True, visibility=True, mask_head=False),
}


@pytest.mark.parametrize("term", sorted(ROUTES))
def test_each_term_reaches_the_parameters_it_should(body, batch, gt, term):
    m = build({term: 1.0})
    total, weighted = m.compute_loss(m(batch["image"]), batch, gt)
    assert set(weighted) == {term}
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    norms = _grad_norms(m)
    for group, reached in ROUTES[term].items():
        assert (norms[group] > 0) == reached, (term, group, norms)


def test_finetuned_upsampler_is_trained_by_its_own_term_only(body, batch, gt):
    m = build({"upsampler": 1.0, "vertex": 1.0}, finetune_upsampler=True)
    terms = m.loss_terms(m(batch["image"]), batch, gt)
    terms["upsampler"].backward(retain_graph=True)
    assert m.upsampler.grad.abs().sum() > 0 and sum(_grad_norms(m).values()) == 0
    assert not isinstance(build({"upsampler": 1.0}).upsampler, torch.nn.Parameter)
    assert "upsampler" not in build({"upsampler": 1.0}).loss_terms(m(batch["image"]), batch, gt)


@pytest.mark.parametrize("ablation", ["l3d", "l3d_l2d", "full"])
def test_ablations_zero_exactly_their_groups(body, batch, gt, ablation):
    overrides = OmegaConf.load(CONFIGS / "ablation" / f"{ablation}.yaml")
    weights = dict(WEIGHTS)
    weights.update(OmegaConf.select(overrides, "method.module.loss_weights", default={}) or {})
    kept = {"l3d": GROUPS["l3d"], "l3d_l2d": GROUPS["l3d"] | GROUPS["l2d"]}.get(
        ablation, GROUPS["l3d"] | GROUPS["l2d"] | GROUPS["lw"]
    )
    m = build(weights)
    out = m(batch["image"])
    total, weighted = m.compute_loss(out, batch, gt)
    assert set(weighted) == kept
    # An ablated term contributes nothing: the total is the sum over the kept terms alone, and the
    # gradient equals that of a model that never had the other weights.
    total.backward()
    grads = [p.grad.clone() if p.grad is not None else None for p in m.parameters()]
    ref = build({k: v for k, v in weights.items() if k in kept})
    ref_total, _ = ref.compute_loss(ref(batch["image"]), batch, gt)
    ref_total.backward()
    assert total.item() == pytest.approx(ref_total.item(), rel=1e-5)
    for g, p in zip(grads, ref.parameters(), strict=True):
        if g is None:
            assert p.grad is None or (p.grad == 0).all()
        else:
            torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-4)


def test_everything_ablated_keeps_a_zero_connected_loss(body, batch, gt):
    m = build({k: 0.0 for k in WEIGHTS})
    total, weighted = m.compute_loss(m(batch["image"]), batch, gt)
    assert weighted == {} and total.item() == 0.0
    total.backward()
    assert sum(_grad_norms(m).values()) == 0.0


def test_shared_metrics_score_the_gt_mesh_near_perfect(body, batch, gt):
    m = build(metric_scale="gt_root")
    m.update_metrics(m.predict(_gt_output(m, batch, gt), batch, gt), batch, gt)
    metrics = m.metrics()
    assert "vertexpose__densepose" in metrics
    mesh = metrics["mesh"].compute()
    assert mesh["mpjpe"] < 10.0 and mesh["pve"] < 15.0, mesh  # mm: the upsampler's residual
    dp = metrics["densepose"].compute()
    assert dp["gps_ap"] > 0.5, dp
    assert metrics["mask"].compute() > 0.9


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("extra", "backbone"),
    [([], "resnet18"), (["experiment=meshpose_xs"], "mobilenet_v3_large"),
     (["experiment=meshpose_s"], "resnet18"), (["experiment=meshpose_l"], "hrnet_w32"),
     (["experiment=paper_meshpose"], "hrnet_w32")],
)
def test_configs_compose_with_each_backbone_preset(body, extra, backbone):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=meshpose", "ablation=l3d_l2d", *extra])
    assert cfg.backbone.name == backbone
    assert cfg.method.module.loss_weights.rendering == 0.0 and cfg.method.module.loss_weights.vertex > 0
    if extra == ["experiment=paper_meshpose"]:
        assert list(cfg.image_size) == [384, 288] and cfg.trainer.accelerator == "gpu"
    if not extra:
        from densehmr.runs import build_method

        cfg.image_size = [64, 64]
        m = build_method(cfg)
        assert isinstance(m, MeshPose) and m.uv_decoding == "barycentric"
        assert not m.active("rendering") and m.active("barycentric")


# ----------------------------------------------------------------------------- pictures
def test_pictures_are_uint8_panels(model, batch, gt, tmp_path):
    from densehmr.viz.mesh_overlay import save_png

    out = _gt_output(model, batch, gt)
    pics = model.pictures(out, batch, model.predict(out, batch, gt), gt)
    assert set(pics) == {"heatmaps", "iuv", "mesh"}
    for name, pic in pics.items():
        assert pic.dtype.name == "uint8" and pic.ndim == 3 and pic.shape[0] == SIZE[0]
        assert save_png(tmp_path / f"{name}.png", pic).stat().st_size > 0
    # The GT mesh over the image covers the person: the overlay differs from the image there.
    mesh = pics["mesh"]
    assert (mesh[:, SIZE[1] + 2 : 2 * SIZE[1] + 2] != mesh[:, : SIZE[1]]).any()


# ----------------------------------------------------------------------------- overfit
# The regression branch spans the official MeshPose ranges (about 3x the crop), whose coarser bins need
# more steps: 75 ended at the bound (3.5 px), 90 reach about 2.7 px.
STEPS = 90


@pytest.mark.slow
def test_overfits_sixteen_samples(body):
    torch.manual_seed(0)
    data = make_batch(body, n=16, size=SIZE, seed=3)
    m = build(metric_scale="template")
    gt = m.targets(data)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    first = last = None
    start = time.perf_counter()
    for _ in range(STEPS):
        out = m(data["image"])
        total, weighted = m.compute_loss(out, data, gt)
        opt.zero_grad()
        total.backward()
        opt.step()
        if first is None:
            first = {k: v.item() for k, v in weighted.items()}
    last = {k: v.item() for k, v in weighted.items()}
    elapsed = time.perf_counter() - start
    err_px = (out["verts_low"] - gt.verts_low).norm(dim=-1).mean().item()
    print(f"overfit {STEPS} steps: {elapsed:.1f} s; vertex error {err_px:.2f} px; first {first}; last {last}")
    assert last["vertex"] < 0.25 * first["vertex"]
    assert last["barycentric"] < 0.8 * first["barycentric"]
    assert last["joints2d"] < 0.1 * first["joints2d"]
    assert last["rendering"] < 0.5 * first["rendering"]
    assert err_px < 3.5  # px in a 64 px crop, from about 20 px at the start
