"""DCT: the HMR losses by hand, the camera conversion, the dense-weight ablation, the IUV input
branch, Lightning integration and a 16-sample overfit."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
from batch_factory import make_batch
from method_factory import make_method

from densehmr.body.assets import FINE_TO_MASK14
from densehmr.losses.hmr import betas_loss, keypoint_2d_loss, keypoint_3d_loss, rotation_matrix_loss
from densehmr.methods import dct as dct_module
from densehmr.methods.dct import DCT, encode_iuv
from densehmr.methods.hmr_base import HMRTargets
from densehmr.metrics import MeshError
from densehmr.render import PerspectiveCamera, weak_perspective_project
from densehmr.render.cameras import crop_translation

SIZE = (64, 64)
WEIGHTS = {"kp2d": 10.0, "kp3d": 10.0, "pose": 10.0, "betas": 10.0}


def make_dct(*overrides: str, **options) -> DCT:
    options.setdefault("loss_weights", WEIGHTS)
    return make_method("dct", "method.lr=1e-3", *overrides, image_size=SIZE, **options)


def completed_batch(model: DCT, n: int = 4, seed: int = 0) -> tuple[dict, HMRTargets]:
    """A batch with the network's input under `input`, and its targets."""
    batch = make_batch(model.body, n=n, size=SIZE, seed=seed)
    targets = model.targets(batch)
    return {**batch, "input": model.network_input(batch, targets)}, targets


# ----------------------------------------------------------------- HMR losses, hand-solved
def test_keypoint_2d_loss_by_hand():
    pred = torch.tensor([[[10.0, 10.0], [20.0, 20.0], [0.0, 0.0]]])
    target = torch.tensor([[[12.0, 6.0], [20.0, 21.0], [100.0, 100.0]]])
    weight = torch.tensor([[1.0, 1.0, 0.0]])  # the third keypoint is not visible
    # l1: per point mean |d| / scale = (2 + 4) / 2 / 4 = 0.75 and (0 + 1) / 2 / 4 = 0.125
    assert keypoint_2d_loss(pred, target, weight, scale=4.0).item() == pytest.approx((0.75 + 0.125) / 2)
    # l2: (0.25 + 1) / 2 and (0 + 1/16) / 2
    l2 = keypoint_2d_loss(pred, target, weight, scale=4.0, norm="l2")
    assert l2.item() == pytest.approx((0.625 + 0.03125) / 2)


def test_per_sample_keypoint_2d_loss_is_dcts_normalization():
    """DCT's trainer weighs sample i's visible keypoints by J / n_i and takes the mean over all
    B x J x 2 entries: each person's mean over its visible keypoints, then the mean over persons."""
    pred = torch.zeros(2, 3, 2)
    target = torch.tensor([[[4.0, 0.0], [0.0, 0.0], [9.0, 9.0]], [[4.0, 4.0], [4.0, 4.0], [4.0, 4.0]]])
    weight = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    j = 3
    dct_weight = weight * j / weight.sum(1, keepdim=True)
    official = ((pred - target).abs() * dct_weight[..., None]).mean() / 2.0
    got = keypoint_2d_loss(pred, target, weight, scale=2.0, reduction="per_sample")
    assert got.item() == pytest.approx(official.item(), rel=1e-6)
    assert got.item() == pytest.approx((1.0 + 2.0) / 2)
    assert keypoint_2d_loss(pred, target, weight, scale=2.0).item() == pytest.approx((1.0 + 3 * 2.0) / 4)
    with pytest.raises(ValueError, match="reduction"):
        keypoint_2d_loss(pred, target, weight, reduction="sum")


def test_keypoint_3d_loss_is_root_centred():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 17, 3, generator=gen)
    weight = torch.ones(2, 17)
    shifted = target + torch.tensor([0.3, -1.0, 2.0])
    assert keypoint_3d_loss(shifted, target, weight).item() == pytest.approx(0.0, abs=1e-10)
    # One joint 0.3 m off along x (not the root): mean over 17 joints of 0.09 / 3.
    moved = target.clone()
    moved[:, 5, 0] += 0.3
    assert keypoint_3d_loss(moved, target, weight, root=0).item() == pytest.approx(0.09 / 3 / 17, rel=1e-5)
    # Centring on the hips' midpoint moves every joint when a hip moves.
    hip = target.clone()
    hip[:, 1, 0] += 0.2
    expected = (16 * 0.1**2 + 0.1**2) / 3 / 17  # every joint 0.1 m off along x after recentring
    assert keypoint_3d_loss(hip, target, weight, root=(1, 4)).item() == pytest.approx(expected, rel=1e-5)


def test_parameter_losses_match_mse_on_annotated_samples():
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 24, 3, 3, generator=gen), torch.randn(3, 24, 3, 3, generator=gen)
    has = torch.tensor([True, False, True])
    expected = torch.nn.functional.mse_loss(pred[has], target[has])
    torch.testing.assert_close(rotation_matrix_loss(pred, target, has), expected)
    b_pred, b_target = torch.randn(3, 10, generator=gen), torch.randn(3, 10, generator=gen)
    expected = torch.nn.functional.mse_loss(b_pred[has], b_target[has])
    torch.testing.assert_close(betas_loss(b_pred, b_target, has), expected)
    none = torch.zeros(3, dtype=torch.bool)
    b_pred.requires_grad_(True)
    zero = betas_loss(b_pred, b_target, none)
    (grad,) = torch.autograd.grad(zero, b_pred)
    assert zero.item() == 0.0 and not grad.any()


# ----------------------------------------------------------------- camera and encoding
def test_crop_translation_reproduces_the_weak_perspective():
    """Points in the body's z = 0 plane project identically through the perspective camera at the
    converted translation (principal point off the crop centre) and through the weak perspective."""
    cam = torch.tensor([[0.9, 0.05, -0.1], [1.3, -0.2, 0.15]])
    focal = torch.tensor([[128.0, 128.0], [200.0, 200.0]])
    principal = torch.tensor([[30.0, 35.0], [32.0, 28.0]])
    points = torch.cat([torch.rand(2, 20, 2) - 0.5, torch.zeros(2, 20, 1)], -1)
    transl = crop_translation(cam, focal, principal, SIZE)
    perspective = PerspectiveCamera(focal, principal).project(points + transl[:, None])
    torch.testing.assert_close(perspective, weak_perspective_project(points, cam, SIZE[1]))
    assert transl[0, 2].item() == pytest.approx(2 * 128.0 / (64 * 0.9))  # tz = 2 f / (size s)


def test_encode_iuv():
    iuv = torch.zeros(1, 3, 1, 2)
    iuv[0, :, 0, 1] = torch.tensor([24.0, 0.5, 1.0])
    torch.testing.assert_close(encode_iuv(iuv)[0, :, 0], torch.tensor([[-1.0, 1.0], [-1.0, 0.0], [-1.0, 1.0]]))


# ----------------------------------------------------------------- the method
def test_dense_weight_lives_in_the_option():
    with pytest.raises(ValueError, match="dense_weight"):
        make_dct(loss_weights={**WEIGHTS, "dense": 1.0})
    assert make_dct(dense_weight=0.5).loss_weights["dense"] == 0.5


def test_dense_weight_zero_removes_the_term(monkeypatch):
    """With dense_weight=0 the dense loss is never computed and the gradient does not depend on the
    DensePose points; with a weight it does (so the check can fail)."""

    def grads(model: DCT, batch: dict) -> list[torch.Tensor]:
        model.zero_grad()
        total, weighted = model.compute_loss(model(batch["input"]), batch, targets)
        total.backward()
        return weighted, [p.grad.clone() for p in model.regressor.parameters()]

    ablated, dense = make_dct(dense_weight=0.0).eval(), make_dct(dense_weight=1.0).eval()
    batch, targets = completed_batch(ablated)
    moved = {**batch, "dp_xy": batch["dp_xy"] + 7.0}

    weighted, before = grads(dense, batch)
    _, after = grads(dense, moved)
    assert "dense" in weighted
    assert any(not torch.allclose(a, b) for a, b in zip(before, after, strict=True))

    def never(*args, **kwargs):
        raise AssertionError("the dense loss was computed with dense_weight=0")

    monkeypatch.setattr(dct_module, "dense_keypoint_l1", never)
    weighted, before = grads(ablated, batch)
    _, after = grads(ablated, moved)
    assert "dense" not in weighted
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_predictions_have_the_shared_interface():
    model = make_dct().eval()
    batch, targets = completed_batch(model)
    with torch.no_grad():
        out = model(batch["input"])
        pred = model.predict(out, batch, targets)
    n, v = batch["image"].shape[0], model.body.num_vertices
    assert pred.iuv.shape == (n, 3, *SIZE) and pred.verts.shape == (n, v, 3) and pred.kp2d.shape == (n, 17, 3)
    assert torch.equal(pred.mask, (pred.iuv[:, 0] > 0).float())  # the mesh's silhouette, as PyMAF
    # The camera-frame mesh projects, through the sample's own camera, onto the weak-perspective kp2d.
    k = batch["cam_K"]
    camera = PerspectiveCamera(k[:, [0, 1], [0, 1]], k[:, :2, 2])
    joints = torch.einsum("jv,bvc->bjc", model.body.regressors["coco17"], pred.verts)
    depth_spread = (pred.verts[..., 2].amax(1) - pred.verts[..., 2].amin(1)) / pred.verts[..., 2].mean(1)
    error = (camera.project(joints) - pred.kp2d[..., :2]).norm(dim=-1).amax(1)
    assert (error < 64 * depth_spread).all()  # equal up to the weak perspective's depth approximation
    assert (pred.iuv[:, 0] > 0).any()
    assert set(model.pictures(out, batch, pred, targets)) == {"iuv_mesh"}


def test_iuv_input_sources(tmp_path):
    """Training: IUV rendered from the GT mesh (the batch's own rendering); evaluation: the DenseReg
    checkpoint's prediction, or the GT rendering with a warning when there is none."""

    densereg = make_method("densereg", image_size=SIZE, loss_weights={"part_ce": 1.0}, seed=None, head_width=16,
                           head_convs=1)
    path = tmp_path / "densereg.ckpt"
    torch.save({"state_dict": densereg.state_dict(), "hyper_parameters": dict(densereg.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    model = make_dct(iuv_input=True, iuv_checkpoint=str(path))
    with pytest.raises(ValueError, match=r"dct.iuv_checkpoint: checkpoint .*missing.ckpt: no such file"):
        make_dct(iuv_input=True, iuv_checkpoint=str(tmp_path / "missing.ckpt"))

    model.train()
    batch, targets = completed_batch(model)
    assert batch["input"].shape[1] == 6 and batch["image"].shape[1] == 3
    iuv = model.input_iuv(batch, targets)
    torch.testing.assert_close(batch["input"][:, 3:], encode_iuv(iuv))
    assert torch.equal(torch.tensor(FINE_TO_MASK14)[iuv[:, 0].round().long()], batch["mask_parts"])

    model.eval()
    batch, targets = completed_batch(model)
    image = batch["image"][:, :3]
    densereg = model._densereg[0]
    with torch.no_grad():
        expected = densereg.predict(densereg(image), {"image": image}).iuv
    torch.testing.assert_close(batch["input"][:, 3:], encode_iuv(expected))

    oracle = make_dct(iuv_input=True).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch, targets = completed_batch(oracle)
    assert any("oracle" in str(w.message) for w in caught)
    assert torch.equal((oracle.input_iuv(batch, targets)[:, 0] > 0).float(), batch["mask"])

    # The IUV branch is read: another map changes the estimate.
    with torch.no_grad():
        a = oracle(batch["input"])["cam"]
        b = oracle(torch.cat([batch["input"][:, :3], -torch.ones_like(batch["input"][:, 3:])], 1))["cam"]
    assert not torch.allclose(a, b)


def test_lightning_step_reports_pymafs_metric_keys():
    model = make_dct("log_images_every_n_steps=0")
    batches = [make_batch(model.body, n=4, size=SIZE, seed=s) for s in (0, 1)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, loader, loader)
    keys = set(model.last_metrics)
    for key in ("val/mesh/mpjpe", "val/mesh/pa_mpjpe", "val/mesh/pve", "val/densepose/gps_ap", "val/keypoints/ap",
                "val/mask/iou"):
        assert key in keys


@pytest.mark.slow
def test_overfits_sixteen_samples():
    """60 Adam steps (gradients clipped as the trainer configs do) on one 16-sample batch lower the
    training loss and the MPJPE substantially."""
    torch.manual_seed(0)
    model = make_dct("~scheduler", dropout=0.0)
    batch, targets = completed_batch(model, n=16)
    mesh = MeshError(model.body.regressors["h36m17"])

    def measure() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(batch["input"])
            loss, _ = model.compute_loss(out, batch, targets)
            mesh.update(model.predict(out, batch, targets).verts, targets.verts)
        mpjpe = float(mesh.compute()["mpjpe"])
        mesh.reset()
        model.train()
        return float(loss), mpjpe

    loss0, mpjpe0 = measure()
    optimizer = model.configure_optimizers()
    for _ in range(60):
        loss, _ = model.compute_loss(model(batch["input"]), batch, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    loss1, mpjpe1 = measure()
    print(f"loss {loss0:.3f} -> {loss1:.3f}, MPJPE {mpjpe0:.1f} -> {mpjpe1:.1f} mm")
    assert loss1 < 0.3 * loss0
    assert mpjpe1 < 0.5 * mpjpe0
