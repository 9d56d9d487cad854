"""PyMAF and the body-parameter utilities it shares with DCT: body model, mean parameters, HMR regressor,
the head's sampling and gradient flow, the method's losses and predictions, and a small overfit."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from batch_factory import make_batch
from method_factory import make_method
from scipy.spatial.transform import Rotation

from densehmr.body.assets import FINE_TO_MASK14
from densehmr.body.body_model import BodyModel
from densehmr.body.mean_params import (
    crop_weak_perspective,
    default_mean_params,
    load_mean_params,
    mean_params_from_npz,
    save_mean_params,
)
from densehmr.body.smpl_layout import make_smplx
from densehmr.geometry.rotations import axis_angle_to_rotmat, rot6d_to_rotmat
from densehmr.losses.hmr import camera_scale_penalty
from densehmr.losses.iuv_maps import iuv_map_losses
from densehmr.nn.heads.hmr_regressor import BodyEstimate, HMRRegressor
from densehmr.nn.heads.pymaf_head import (
    PointFeatureMLP,
    PyMAFHead,
    grid_points,
    pixels_to_normalized,
    sample_features,
)
from densehmr.render import PerspectiveCamera, translation_to_weak_perspective

LOSS_WEIGHTS = {"kp2d": 300.0, "kp3d": 300.0, "pose": 60.0, "betas": 0.06, "cam": 1.0, "aux_iuv": 1.0}
# Adam at 1e-3 reaches 5x lower MPJPE in about 75 steps (217 -> 41 mm), 35 mm after 100.
OVERFIT_STEPS = 100


@pytest.fixture(scope="module")
def body_model(body):
    return BodyModel(body)


@pytest.fixture(scope="module")
def small_batch(body):
    return make_batch(body, n=4, size=(64, 64), seed=3)


def _small_head(body, body_model, feedback="mesh_aligned", aux_iuv=True, pyramid="deconv"):
    """A PyMAF head on fake backbone maps (strides 4..32 of a 64 px crop), narrow and without dropout."""
    torch.manual_seed(0)
    return PyMAFHead(
        [8, 8, 8, 16], [4, 8, 16, 32], body_model, load_mean_params(body), body.downsample[1], (64, 64),
        feedback=feedback, pyramid=pyramid, aux_iuv=aux_iuv, grid_size=21, channels=16, mlp_dims=(128, 64, 5),
        hidden=32, dropout=0.0,
    )


def _fake_features(batch: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    shapes = zip([8, 8, 8, 16], [4, 8, 16, 32], strict=True)
    return [torch.randn(batch, c, 64 // s, 64 // s, generator=gen) for c, s in shapes]


# ----------------------------------------------------------------- body model
def test_body_model_matches_smplx_axis_angle(body, body_model):
    gen = torch.Generator().manual_seed(0)
    aa = torch.randn(3, 24, 3, generator=gen) * 0.4
    betas = torch.randn(3, 10, generator=gen)
    out = body_model(axis_angle_to_rotmat(aa), betas)
    ref = make_smplx(body.model_file, body.vertex_ids, batch_size=3)(
        betas=betas, global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(3, 69), transl=torch.zeros(3, 3)
    )
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints_smpl24, ref.joints[:, :24], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints_h36m17, body.regressors["h36m17"] @ ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints_coco17, body.regressors["coco17"] @ ref.vertices, atol=1e-5, rtol=0)
    # Any batch size, samples independent of each other.
    single = body_model(axis_angle_to_rotmat(aa[1:2]), betas[1:2])
    torch.testing.assert_close(single.vertices[0], out.vertices[1], atol=1e-5, rtol=0)


def test_body_model_has_no_parameters_and_a_small_state(body_model):
    assert sum(p.numel() for p in body_model.parameters()) == 0
    assert len(body_model.state_dict()) == 0


# ----------------------------------------------------------------- mean parameters
def test_default_mean_params_frame_the_upright_body(body, body_model):
    params = default_mean_params(body)
    rot = rot6d_to_rotmat(torch.from_numpy(params["pose"]).reshape(24, 6))
    torch.testing.assert_close(rot[0], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    torch.testing.assert_close(rot[1:], torch.eye(3, dtype=torch.float64).expand(23, 3, 3))
    verts = body_model(rot[None].float(), torch.zeros(1, 10)).vertices[0].double()
    # Upright in the OpenCV frame: the head (up in the body) has the smallest image y.
    assert verts[:, 1].argmin() != verts[:, 1].argmax()
    head_y = verts[body.regressors["h36m17"][10].double().argmax(), 1]
    assert head_y < verts[:, 1].mean()
    s, tx, ty = params["cam"]
    ndc = s * (verts[:, :2] + torch.tensor([tx, ty], dtype=torch.float64))
    lo, hi = ndc.amin(0), ndc.amax(0)
    torch.testing.assert_close((lo + hi) / 2, torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    assert math.isclose(float((hi - lo).max()), 2.0 / 1.2, rel_tol=1e-6)


def test_crop_weak_perspective_matches_perspective_at_the_body_depth():
    gen = np.random.default_rng(0)
    n = 20
    cam_t = np.stack([gen.uniform(-0.5, 0.5, n), gen.uniform(-0.5, 0.5, n), gen.uniform(4, 12, n)], -1)
    cam_k = np.zeros((n, 3, 3))
    cam_k[:, 0, 0] = cam_k[:, 1, 1] = gen.uniform(500, 1500, n)
    cam_k[:, :2, 2] = gen.uniform(200, 400, (n, 2))
    cam_k[:, 2, 2] = 1
    center = gen.uniform(100, 500, (n, 2))
    scale = gen.uniform(0.5, 2.0, n)
    cam = crop_weak_perspective(cam_t, cam_k, center, scale, box_padding=1.2)
    # Points at the body's depth (z = 0 in the model frame): perspective into the image, then the crop.
    x = np.concatenate([gen.uniform(-0.8, 0.8, (n, 2)), np.zeros((n, 1))], -1)
    cam_pts = x + cam_t
    image_px = cam_k[:, [0, 1], [0, 1]] * cam_pts[:, :2] / cam_pts[:, 2:] + cam_k[:, :2, 2]
    side = 1.2 * 200 * scale
    ndc = 2 * (image_px - center) / side[:, None]
    np.testing.assert_allclose(cam[:, :1] * (x[:, :2] + cam[:, 1:]), ndc, atol=1e-9)


def test_mean_params_from_npz_and_load(tmp_path, body):
    n = 50
    centre = np.array([[math.pi * 0.9, 0.1, 0.0]] + [[0.0, 0.0, 0.3]] * 23)
    around = Rotation.from_rotvec(np.tile(centre, (n, 1, 1)).reshape(-1, 3))
    noise = Rotation.from_rotvec(np.random.default_rng(1).normal(scale=0.05, size=(n * 24, 3)))
    pose = (around * noise).as_rotvec().reshape(n, 72)
    shape = np.random.default_rng(2).normal(size=(n, 10))
    cam_k = np.tile(np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]]), (n, 1, 1))
    cam_t = np.tile([0.1, -0.2, 10.0], (n, 1))
    center = np.tile([320.0, 240.0], (n, 1))
    scale = np.full(n, 1.0)
    has_smpl = np.ones(n, dtype=np.int64)
    has_smpl[-5:] = 0
    shape[-5:] = 100.0  # rows without SMPL do not count
    path = tmp_path / "smpl_train.npz"
    np.savez(path, imgname=np.array(["x.jpg"] * n), center=center, scale=scale, pose=pose, shape=shape,
             has_smpl=has_smpl, cam_K=cam_k, cam_t=cam_t)
    params = mean_params_from_npz(path)
    np.testing.assert_allclose(params["shape"], shape[:-5].mean(0), atol=1e-12)
    # s = 2 f / (1.2 * 200 * scale * tz), principal point at the box centre: t = T_xy.
    np.testing.assert_allclose(params["cam"], [2 * 1000 / (240 * 10), 0.1, -0.2], atol=1e-12)
    rot = rot6d_to_rotmat(torch.from_numpy(params["pose"]).reshape(24, 6)).numpy()
    expected = Rotation.from_rotvec(centre).as_matrix()
    assert np.abs(rot - expected).max() < 0.03
    out = tmp_path / "mean.npz"
    save_mean_params(params, out)
    loaded = load_mean_params(body, out)
    assert {k: v.shape for k, v in loaded.items()} == {"pose": (144,), "shape": (10,), "cam": (3,)}
    torch.testing.assert_close(loaded["cam"], torch.tensor(params["cam"], dtype=torch.float32))


def test_committed_open_mean_params_load(body):
    params = load_mean_params(body)
    rot = rot6d_to_rotmat(params["pose"].reshape(24, 6))
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, torch.eye(3).expand(24, 3, 3), atol=1e-5, rtol=0)
    assert rot[0, 1, 1] < -0.5  # upright in the OpenCV camera frame
    assert 0.5 < float(params["cam"][0]) < 2.0


# ----------------------------------------------------------------- HMR regressor
def test_hmr_regressor_starts_near_the_mean_and_chains(body):
    mean = load_mean_params(body)
    torch.manual_seed(0)
    reg = HMRRegressor(64, mean, hidden=128, dropout=0.5, iterations=3).eval()
    feats = torch.randn(5, 64)
    est = reg(feats)
    assert est.pose6d.shape == (5, 144) and est.betas.shape == (5, 10) and est.cam.shape == (5, 3)
    assert (est.pose6d - mean["pose"]).abs().max() < 0.1
    assert est.rotmat.shape == (5, 24, 3, 3)
    # Starting from a given estimate adds the same kind of residuals to it.
    init = BodyEstimate(torch.zeros(5, 144), torch.ones(5, 10), torch.full((5, 3), 2.0))
    one = HMRRegressor(64, mean, hidden=128, dropout=0.5, iterations=1).eval()
    out = one(feats, init)
    h = one.trunk(torch.cat([feats, init.pose6d, init.betas, init.cam], 1))
    torch.testing.assert_close(out.cam, init.cam + one.dec_cam(h))


# ----------------------------------------------------------------- sampling
def test_grid_points_are_raster_ordered_cell_centres():
    pts = grid_points(21)
    assert pts.shape == (441, 2)
    k = torch.arange(441)
    row, col = k // 21, k % 21
    torch.testing.assert_close(pts[:, 0], (2 * col + 1).float() / 21 - 1)
    torch.testing.assert_close(pts[:, 1], (2 * row + 1).float() / 21 - 1)


def test_grid_sampling_reads_a_known_pattern():
    # A 21 x 21 map whose pixel (row, col) holds 100 row + col: the grid reads exactly these in raster order.
    rows, cols = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    pattern = (100 * rows + cols)[None, None]
    feats = sample_features(pattern, grid_points(21)[None])
    k = torch.arange(441)
    torch.testing.assert_close(feats[0, 0], (k // 21 * 100 + k % 21).float())
    # On a 42 x 42 linear ramp, cell centres sit between pixel centres: bilinear = the ramp at that point.
    ys, xs = torch.meshgrid(torch.arange(42.0) + 0.5, torch.arange(42.0) + 0.5, indexing="ij")
    ramp = (3 * xs - 2 * ys)[None, None]
    pts = grid_points(21)
    px = (pts + 1) / 2 * 42
    torch.testing.assert_close(sample_features(ramp, pts[None])[0, 0], 3 * px[:, 0] - 2 * px[:, 1])


def test_pixels_to_normalized_matches_grid_sample_convention():
    # Pixel centres of a 4 x 6 crop read the pixel values of a 4 x 6 map.
    image = torch.arange(24.0).reshape(1, 1, 4, 6)
    ys, xs = torch.meshgrid(torch.arange(4.0) + 0.5, torch.arange(6.0) + 0.5, indexing="ij")
    px = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    torch.testing.assert_close(sample_features(image, pixels_to_normalized(px, (4, 6))[None])[0, 0], torch.arange(24.0))


def test_point_mlp_reconcatenates_its_input():
    mlp = PointFeatureMLP(16, (8, 4, 5))
    assert [layer.in_channels for layer in mlp.layers] == [16, 8 + 16, 4 + 16]
    assert mlp(torch.randn(2, 16, 7)).shape == (2, 5, 7)


# ----------------------------------------------------------------- head
def test_mesh_points_are_projections_of_the_previous_mesh(body, body_model):
    head = _small_head(body, body_model).eval()
    out = head(_fake_features())
    assert out["points"][0].shape == (2, 441, 2)
    ids = body.downsample[1]
    for t in (1, 2):
        prev = out["steps"][t - 1]
        verts = prev["verts"][:, ids]
        s, txy = prev["cam"][:, None, :1], prev["cam"][:, None, 1:]
        torch.testing.assert_close(out["points"][t], s * (verts[..., :2] + txy), atol=1e-6, rtol=0)
    # The last step's estimate is the top-level one.
    last = out["steps"][-1]
    torch.testing.assert_close(out["verts"], last["verts"])
    torch.testing.assert_close(out["joints_coco17"], last["joints_coco17"])


def test_no_gradient_from_a_step_into_the_previous_estimate(body, body_model):
    head = _small_head(body, body_model)
    feats = [f.requires_grad_(True) for f in _fake_features()]
    out = head(feats)
    steps = out["steps"]
    for t in (1, 2):
        later = steps[t]["verts"].sum() + steps[t]["cam"].sum() + steps[t]["betas"].sum()
        earlier = [steps[k][key] for k in range(t) for key in ("pose6d", "betas", "cam", "verts")]
        grads = torch.autograd.grad(later, earlier, retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads)
        head.zero_grad()
        later.backward(retain_graph=True)
        for k in range(t):
            assert all(p.grad is None for p in head.regressors[k].parameters())
            assert all(p.grad is None for p in head.point_mlps[k].parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.regressors[t].parameters())
    # The features of every level still get gradients (through the shared pyramid).
    assert feats[3].grad is not None and feats[3].grad.abs().sum() > 0


@pytest.mark.parametrize("feedback", ["grid", "global"])
def test_other_feedbacks(body, body_model, feedback):
    head = _small_head(body, body_model, feedback=feedback, aux_iuv=False).eval()
    out = head(_fake_features())
    assert "iuv" not in out
    if feedback == "grid":
        assert all(torch.equal(p, out["points"][0]) for p in out["points"])
        assert head.regressors[2].trunk[0].in_features == 441 * 5 + 157
    else:
        assert out["points"] == [] and head.pyramid is None and head.point_mlps is None
        assert head.regressors[0].trunk[0].in_features == 16 + 157
    assert out["verts"].shape == (2, body.num_vertices, 3)


def test_pyramid_sizes_and_iuv_channels(body, body_model):
    for pyramid in ("deconv", "backbone"):
        head = _small_head(body, body_model, pyramid=pyramid).eval()
        levels = head.pyramid(_fake_features(), head.strides)
        assert [lv.shape[-1] for lv in levels] == [4, 8, 16]  # strides 16, 8, 4 of a 64 px crop
        iuv = head(_fake_features())["iuv"]
        assert {k: v.shape[1:] for k, v in iuv.items()} == {
            "part": (25, 16, 16), "coarse": (15, 16, 16), "u": (25, 16, 16), "v": (25, 16, 16)
        }


# ----------------------------------------------------------------- method
def _method(**options):
    return make_method("pymaf", loss_weights=LOSS_WEIGHTS, channels=32, hidden=64, **options)


def test_losses_predictions_and_cameras(body, small_batch):
    method = _method()
    batch = dict(small_batch)
    targets = method.targets(batch)
    out = method(batch["image"])
    terms = method.loss_terms(out, batch, targets)
    assert set(terms) == set(LOSS_WEIGHTS)
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    # The GT IUV rendered at the crop size covers the person mask.
    iuv, keep = method.gt_iuv(batch, targets, (64, 64))
    assert keep.all()
    agree = ((iuv[:, 0] > 0).float() == batch["mask"]).float().mean()
    assert agree > 0.99
    pred = method.predict(out, batch)
    assert pred.iuv.shape == (4, 3, 64, 64) and pred.verts.shape == (4, body.num_vertices, 3)
    assert pred.kp2d.shape == (4, 17, 3)
    # camera_translation inverts the weak-perspective camera of each crop (principal point off centre).
    batch["cam_K"] = batch["cam_K"].clone()
    batch["cam_K"][:, 0, 2] += 5.0
    cam = _gt_weak_perspective(batch, 64)
    torch.testing.assert_close(method.camera_translation(cam, batch), batch["cam_t"], atol=1e-5, rtol=1e-5)


def _gt_weak_perspective(batch: dict, size: int) -> torch.Tensor:
    """(B, 3) weak-perspective cams equivalent to the batch's perspective cameras at the body depth."""
    k, cam_t = batch["cam_K"], batch["cam_t"]
    shifted = cam_t.clone()
    shifted[:, :2] += (k[:, :2, 2] - size / 2) * cam_t[:, 2:] / k[:, 0, :1]
    return translation_to_weak_perspective(shifted, k[:, 0, 0], size)


def test_predicting_the_gt_body_scores_near_perfect(body, small_batch):
    method = _method(projection="weak_perspective")  # the paper's camera; the perspective one is tested below
    batch = dict(small_batch)
    targets = method.targets(batch)
    cam = _gt_weak_perspective(batch, 64)
    verts = targets.verts - batch["cam_t"][:, None]
    joints = body.regressors["coco17"] @ verts
    pred = method.predict({"verts": verts, "cam": cam, "joints_coco17": joints}, batch)
    torch.testing.assert_close(pred.verts, targets.verts)
    kp2d = (cam[:, None, :1] * (joints[..., :2] + cam[:, None, 1:]) + 1) * 32  # weak perspective, by hand
    torch.testing.assert_close(pred.kp2d[..., :2], kp2d)
    # Weak perspective differs from the batch's strong perspective (focal = 2 crop sizes) by a few px.
    assert (kp2d - batch["kp2d"][..., :2]).norm(dim=-1).mean() < 1.0
    valid, xy = batch["dp_valid"], batch["dp_xy"].long()
    rows = torch.arange(4)[:, None].expand_as(valid)
    part = pred.iuv[rows, 0, xy[..., 1], xy[..., 0]]
    assert (part == batch["dp_I"]).float()[valid].mean() > 0.85
    # The mask is the predicted mesh's silhouette: the GT body's covers the person mask.
    assert (pred.mask == batch["mask"]).float().mean() > 0.95
    method.update_metrics(pred, batch, targets)
    assert method.metrics()["mesh"].compute()["mpjpe"] < 1e-3
    assert method.metrics()["densepose"].compute()["gps_ap"] > 0.6


def test_perspective_projection_reproduces_the_annotated_keypoints_where_weak_perspective_cannot(body, small_batch):
    """The GT body under the GT camera, written as the estimate's weak-perspective cam: the perspective
    projection lands on the annotated keypoints (the generator's own camera) and agrees with the weak
    perspective on the plane of the model's origin; its 2D term of the GT body vanishes."""
    weak, persp = (make_method("pymaf", loss_weights={"kp2d": 300.0}, channels=32, hidden=64, projection=kind)
                   for kind in ("weak_perspective", "perspective"))
    batch = dict(small_batch)
    batch["cam_K"] = batch["cam_K"].clone()
    batch["cam_K"][:, 0, 2] += 5.0  # a principal point off the crop centre
    batch["cam_K"][:, 1, 2] -= 3.0
    targets = persp.targets(batch)
    cam = _gt_weak_perspective(batch, 64)
    verts = targets.verts - batch["cam_t"][:, None]
    joints = body.regressors["coco17"] @ verts
    camera = PerspectiveCamera(batch["cam_K"][:, [0, 1], [0, 1]], batch["cam_K"][:, :2, 2])
    expected = camera.project(joints + batch["cam_t"][:, None])  # the generator's camera, by hand
    torch.testing.assert_close(persp.project(joints, cam, batch), expected, atol=1e-3, rtol=0)
    off = (weak.project(joints, cam, batch) - expected).norm(dim=-1)
    assert off.mean() > 0.2  # the weak perspective's floor on these crops
    plane = torch.cat([joints[..., :2], torch.zeros_like(joints[..., 2:])], -1)
    torch.testing.assert_close(persp.project(plane, cam, batch), weak.project(plane, cam, batch), atol=1e-3, rtol=0)
    estimate = {"joints_coco17": joints, "cam": cam}
    labelled = {**batch, "kp2d": torch.cat([expected, torch.ones_like(expected[..., :1])], -1)}
    assert persp.parametric_terms(estimate, labelled, targets)["kp2d"] < 1e-8
    assert weak.parametric_terms(estimate, labelled, targets)["kp2d"] > 1e-6
    pred = persp.predict({"verts": verts, "cam": cam, "joints_coco17": joints}, batch)
    torch.testing.assert_close(pred.kp2d[..., :2], expected, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="projection"):
        _method(projection="orthographic")


@pytest.mark.parametrize("experiment", [None, "paper_pymaf"])
def test_configs_compose(body, experiment):
    from hydra import compose, initialize_config_dir

    from densehmr.methods.pymaf import PyMAF
    from densehmr.runs import build_method

    configs = Path(__file__).resolve().parents[1] / "configs"
    extra = [f"experiment={experiment}"] if experiment else []
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=pymaf", "pymaf.feedback=grid", *extra])
    # The paper's 2D weight, a thirtieth of it at the CPU default.
    assert cfg.method.module.loss_weights.kp2d == (300.0 if experiment else 10.0) and cfg.pymaf.feedback == "grid"
    if experiment:
        assert list(cfg.image_size) == [224, 224] and cfg.backbone.name == "resnet50"
        assert cfg.method.batch_size == 64 and cfg.optimizer.lr == 5e-5 and cfg.pymaf.channels == 256
        return
    cfg.image_size = [64, 64]
    method = build_method(cfg)
    assert isinstance(method, PyMAF) and method.head.feedback == "grid" and method.aux_iuv


def test_aux_iuv_off_and_weights_off(small_batch):
    method = _method(aux_iuv=False)
    batch = dict(small_batch)
    targets = method.targets(batch)
    out = method(batch["image"])
    assert "iuv" not in out and method.head.iuv is None
    assert "aux_iuv" not in method.loss_terms(out, batch, targets)
    method.loss_weights["pose"] = 0.0
    assert "pose" not in method.loss_terms(out, batch, targets)


@pytest.mark.slow
def test_overfit_sixteen_samples_lowers_mpjpe(body, tmp_path):
    from densehmr.metrics import MeshError

    torch.manual_seed(0)
    # 32 px crops keep it fast: the regressors memorize 16 people whatever the feature resolution.
    batch = make_batch(body, n=16, size=(32, 32), seed=0)
    # Start from the data-independent default (T-pose), whatever the committed file holds.
    mean_path = tmp_path / "mean.npz"
    save_mean_params(default_mean_params(body), mean_path)
    method = make_method(
        "pymaf", image_size=(32, 32), aux_iuv=False, mean_params=str(mean_path), channels=64, hidden=256,
        dropout=0.0, loss_weights={k: v for k, v in LOSS_WEIGHTS.items() if k != "aux_iuv"},
    )
    targets = method.targets(batch)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)

    def mpjpe() -> float:
        method.eval()
        with torch.no_grad():
            pred = method.predict(method(batch["image"]), batch)
        method.train()
        metric = MeshError(body.regressors["h36m17"])
        metric.update(pred.verts, targets.verts)
        return float(metric.compute()["mpjpe"])

    before = mpjpe()
    for _ in range(OVERFIT_STEPS):
        total, _ = method.compute_loss(method(batch["image"]), batch, targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    after = mpjpe()
    assert after * 5 <= before, (before, after)


# ----------------------------------------------------------------- losses as PyMAF's trainer scales them
def _official_body_uv_terms(u_pred, v_pred, index_pred, ann_pred, target, has_iuv):
    """PyMAF's trainer, re-derived: one-hot maps of the target's 25 parts, the U / V targets spread on
    them, CE over every pixel of the samples with a target, smooth-L1 summed over the one-hot pixels
    (background's channel 0 included) and divided by the whole batch."""
    batch = index_pred.shape[0]
    part = target[:, 0].long()
    imap = torch.nn.functional.one_hot(part, 25).permute(0, 3, 1, 2).float()
    umap, vmap = imap * target[:, 1:2], imap * target[:, 2:3]
    annmap = torch.tensor(FINE_TO_MASK14)[part]
    sel = imap[has_iuv] > 0
    loss_u = torch.nn.functional.smooth_l1_loss(u_pred[has_iuv][sel], umap[has_iuv][sel], reduction="sum") / batch
    loss_v = torch.nn.functional.smooth_l1_loss(v_pred[has_iuv][sel], vmap[has_iuv][sel], reduction="sum") / batch
    ce_i = torch.nn.functional.cross_entropy(index_pred[has_iuv], part[has_iuv])
    ce_ann = torch.nn.functional.cross_entropy(ann_pred[has_iuv], annmap[has_iuv])
    return {"U": loss_u, "V": loss_v, "IndexUV": ce_i, "segAnn": ce_ann}


def test_aux_iuv_terms_by_hand_and_as_pymafs_trainer():
    target = torch.zeros(2, 3, 2, 2)
    target[0, 0] = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    target[0, 1] = torch.tensor([[0.0, 0.5], [0.2, 0.0]])
    target[0, 2] = torch.tensor([[0.0, 0.4], [0.1, 0.0]])
    target[1, 0] = 5.0  # a sample without a rendered target: ignored, but counted in the batch size
    keep = torch.tensor([True, False])
    part_logits, coarse_logits = torch.zeros(2, 25, 2, 2), torch.zeros(2, 15, 2, 2)
    u_maps, v_maps = torch.zeros(2, 25, 2, 2), torch.zeros(2, 25, 2, 2)
    u_maps[:, 0] = 0.3  # background's channel: 0.3 off at the two background pixels
    u_maps[:, 3] = 0.7
    terms = iuv_map_losses(part_logits, coarse_logits, u_maps, v_maps, target, keep, torch.tensor(FINE_TO_MASK14))
    # U: part-3 pixels 0.2 and 0.5 off, background 0.3 and 0.3; V: 0.4 and 0.1; d^2 / 2 summed, / B = 2.
    by_hand = (0.5 * (0.2**2 + 0.5**2 + 0.3**2 + 0.3**2) + 0.5 * (0.4**2 + 0.1**2)) / 2
    assert terms["uv"].item() == pytest.approx(by_hand, rel=1e-6)
    assert terms["part"].item() == pytest.approx(math.log(25), rel=1e-6)
    assert terms["coarse"].item() == pytest.approx(math.log(15), rel=1e-6)

    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, c, 2, 2, generator=gen) for c in (25, 15, 25, 25)]
    ours = iuv_map_losses(*maps, target, keep, torch.tensor(FINE_TO_MASK14))
    official = _official_body_uv_terms(maps[2], maps[3], maps[0], maps[1], target, keep)
    assert ours["part"].item() == pytest.approx(official["IndexUV"].item(), rel=1e-6)
    assert ours["coarse"].item() == pytest.approx(official["segAnn"].item(), rel=1e-6)
    # PyMAF weighs U and V by POINT_REGRESSION_WEIGHTS 0.5 and both CE by 1: configs/method/pymaf.yaml.
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs/method/pymaf.yaml").pymaf
    weights = {"part": cfg.aux_part_weight, "coarse": cfg.aux_coarse_weight, "uv": cfg.aux_uv_weight}
    total = sum(weights[k] * v for k, v in ours.items())
    expected = official["IndexUV"] + official["segAnn"] + 0.5 * (official["U"] + official["V"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_camera_scale_penalty_is_pymafs():
    cam = torch.tensor([[0.9, 0.1, -0.2], [0.05, 0.0, 0.0], [-0.1, 0.0, 0.0]])
    expected = (math.exp(-9.0) ** 2 + math.exp(-0.5) ** 2 + math.exp(1.0) ** 2) / 3
    assert camera_scale_penalty(cam).item() == pytest.approx(expected, rel=1e-6)

