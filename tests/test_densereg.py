"""DenseReg / DensePose-RCNN: quantization, losses on hand-solved cases, head, method wiring, overfit."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from batch_factory import make_batch
from method_factory import make_method
from torch import nn

from densehmr.losses import densepose as dp_losses
from densehmr.losses.densepose import (
    area_fractions,
    coarse_segmentation_ce,
    part_cross_entropy,
    quantized_uv_losses,
    sample_at_points,
    uv_smooth_l1,
)
from densehmr.losses.quantize import decode, decode_hard, decode_soft, encode
from densehmr.methods.base import Targets
from densehmr.nn.heads.densepose_head import DensePoseHead
from densehmr.viz.iuv import iuv_to_rgb, points_to_iuv

WEIGHTS = {"part_ce": 1.0, "uv": 0.01, "uv_bin": 1.0, "coarse_seg": 5.0}


# ----------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("num_bins", [1, 4, 8])
def test_encode_then_hard_decode_is_identity(num_bins):
    x = torch.rand(500, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, torch.tensor([0.0, 1.0, 0.5, 0.125])])
    bins, res = encode(x, num_bins)
    assert bins.min() >= 0 and bins.max() <= num_bins - 1
    assert res.min() >= 0 and res.max() <= 1
    logits = F.one_hot(bins, num_bins).float() * 5.0
    residuals = torch.rand(x.shape[0], num_bins)  # other bins' residuals do not matter
    residuals[torch.arange(x.shape[0]), bins] = res
    torch.testing.assert_close(decode_hard(logits, residuals), x, atol=1e-6, rtol=0)


def test_soft_decode_of_a_peaked_distribution_matches_hard():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, generator=gen)
    bins, res = encode(x, 8)
    residuals = torch.rand(300, 8, generator=gen)  # other bins' residuals are arbitrary
    residuals[torch.arange(300), bins] = res
    logits = F.one_hot(bins, 8).float() * 40.0  # all mass on the true bin
    torch.testing.assert_close(decode_soft(logits, residuals), x, atol=1e-6, rtol=0)
    soft, hard = decode(logits, residuals, "soft"), decode(logits, residuals, "hard")
    torch.testing.assert_close(soft, hard, atol=1e-6, rtol=0)


def test_soft_decode_is_the_probability_weighted_mean_of_bin_decodes():
    # Two bins of K = 4 share the mass 0.25 / 0.75: x = 0.25 (1 + 0.2) / 4 + 0.75 (3 + 0.6) / 4.
    logits = torch.full((1, 4), -1e9)
    logits[0, 1], logits[0, 3] = 0.0, math.log(3.0)
    residuals = torch.tensor([[0.9, 0.2, 0.9, 0.6]])
    expected = 0.25 * 1.2 / 4 + 0.75 * 3.6 / 4
    assert decode_soft(logits, residuals).item() == pytest.approx(expected, abs=1e-6)


def test_decode_along_a_middle_dimension():
    x = torch.rand(2, 3, 5, 5)
    bins, res = encode(x, 6)
    logits = F.one_hot(bins, 6).movedim(-1, 2).float()  # (2, 3, 6, 5, 5)
    residuals = res[:, :, None].expand(-1, -1, 6, -1, -1)
    torch.testing.assert_close(decode_hard(logits, residuals, dim=2), x, atol=1e-6, rtol=0)


def test_decode_rejects_unknown_mode():
    with pytest.raises(ValueError, match="decode mode"):
        decode(torch.zeros(1, 2), torch.zeros(1, 2), "median")


# ----------------------------------------------------------------------------- losses
def test_sample_at_points_reads_crop_pixels_at_any_resolution():
    # A map whose value is the crop x coordinate of its pixel centres reads back x, at full and half
    # resolution of a 4 x 8 crop.
    xy = torch.tensor([[[3.0, 1.0], [4.5, 2.5], [2.25, 3.0]]])
    for h, w in ((4, 8), (2, 4)):
        centres = (torch.arange(w) + 0.5) * 8 / w
        maps = centres.expand(1, 1, h, w)
        torch.testing.assert_close(sample_at_points(maps, xy, (4, 8))[0, :, 0], xy[0, :, 0])
    # Bilinear between four pixels: value = col + 10 row at pixel centres.
    maps = (torch.arange(8)[None] + 10 * torch.arange(4)[:, None]).float()[None, None]
    got = sample_at_points(maps, torch.tensor([[[3.5, 2.5], [2.0, 1.0]]]), (4, 8))[0, :, 0]
    torch.testing.assert_close(got, torch.tensor([23.0, 6.5]))


def test_part_cross_entropy_hand_solved():
    logits = torch.zeros(2, 25, 4, 4)
    logits[:, 7] = 2.0
    xy = torch.tensor([[[1.5, 1.5], [2.5, 0.5]], [[0.5, 3.5], [3.0, 3.0]]])
    part = torch.tensor([[7, 3], [7, 0]])
    valid = torch.tensor([[True, True], [True, False]])
    # Part 7 has probability e^2 / (e^2 + 24) everywhere; any other part 1 / (e^2 + 24).
    z = math.exp(2.0) + 24.0
    expected = (2 * -math.log(math.exp(2.0) / z) + -math.log(1.0 / z)) / 3
    assert part_cross_entropy(logits, xy, part, valid, (4, 4)).item() == pytest.approx(expected, rel=1e-6)


def test_uv_smooth_l1_sums_over_points():
    u_maps = torch.arange(25.0)[None, :, None, None].expand(2, 25, 2, 2) / 100.0  # U of part p = p / 100
    v_maps = torch.full((2, 25, 2, 2), 0.5)
    xy = torch.full((2, 2, 2), 1.0)
    part = torch.tensor([[10, 20], [5, 5]])
    u = torch.tensor([[0.3, 0.2], [0.05, 0.9]])
    v = torch.tensor([[0.5, 0.0], [0.9, 0.1]])
    valid = torch.tensor([[True, True], [True, False]])
    # smooth-L1 with beta 1 is d^2 / 2 for |d| < 1. Person 0: (0.1-0.3, 0.5-0.5), (0.2-0.2, 0.5-0);
    # person 1: (0.05-0.05, 0.5-0.9).
    person0 = 0.5 * (0.2**2 + 0.0 + 0.0 + 0.5**2)
    person1 = 0.5 * (0.0 + 0.4**2)
    got = uv_smooth_l1(u_maps, v_maps, xy, part, u, v, valid, (2, 2))
    assert got.item() == pytest.approx(person0 + person1, rel=1e-6)
    # L1 branch above beta: |d| - beta / 2.
    got = uv_smooth_l1(u_maps, v_maps, xy, part, u, v, valid, (2, 2), beta=0.1)
    l1 = [0.2, 0.0, 0.0, 0.5, 0.0, 0.4]
    sq = [0.5 * d * d / 0.1 if d < 0.1 else d - 0.05 for d in l1]
    assert got.item() == pytest.approx(sum(sq), rel=1e-6)


def test_quantized_uv_losses_hand_solved():
    k = 4
    u_bins = torch.zeros(1, 25, k, 3, 3)
    v_bins = torch.zeros(1, 25, k, 3, 3)
    v_bins[0, 2, 1] = math.log(3.0)  # part 2, V bin 1: probability 3/6
    u_res = torch.full((1, 25, k, 3, 3), 0.5)
    v_res = torch.full((1, 25, k, 3, 3), 0.2)
    xy = torch.tensor([[[1.5, 1.5]]])
    part = torch.tensor([[2]])
    u, v = torch.tensor([[0.6]]), torch.tensor([[0.3]])  # U: bin 2, residual 0.4; V: bin 1, residual 0.2
    bin_ce, residual = quantized_uv_losses(u_bins, u_res, v_bins, v_res, xy, part, u, v,
                                           torch.tensor([[True]]), (3, 3))
    assert bin_ce.item() == pytest.approx((math.log(4.0) + -math.log(0.5)) / 2, rel=1e-6)
    # The U residual is 0.1 bins off, 0.1 / 4 in U units; V is exact.
    assert residual.item() == pytest.approx(0.5 * (0.1 / k) ** 2 + 0.0, abs=1e-9)


@pytest.mark.parametrize("d", [0.01, -0.03])
def test_direct_and_quantized_charge_one_coordinate_error_alike(d):
    """A decoded U, V off by d costs the same `uv` term in both modes (K = 8: in bin units the
    quantized residual would cost K^2 = 64 times more)."""
    k, part = 8, 3
    u, v = torch.tensor([[0.6]]), torch.tensor([[0.3]])  # U: bin 4, residual 0.8; V: bin 2, residual 0.4
    xy, valid = torch.tensor([[[0.5, 0.5]]]), torch.tensor([[True]])
    direct_u = torch.zeros(1, 25, 1, 1)
    direct_v = torch.zeros(1, 25, 1, 1)
    direct_u[0, part] = 0.6 + d
    direct_v[0, part] = 0.3 - d
    direct = uv_smooth_l1(direct_u, direct_v, xy, torch.tensor([[part]]), u, v, valid, (1, 1))

    u_bins, v_bins = torch.zeros(1, 25, k, 1, 1), torch.zeros(1, 25, k, 1, 1)
    u_bins[0, part, 4] = v_bins[0, part, 2] = 10.0
    u_res, v_res = torch.zeros(1, 25, k, 1, 1), torch.zeros(1, 25, k, 1, 1)
    u_res[0, part, 4] = 0.8 + k * d
    v_res[0, part, 2] = 0.4 - k * d
    assert decode_hard(u_bins[0, part, :, 0, 0], u_res[0, part, :, 0, 0]).item() == pytest.approx(0.6 + d)
    _, quantized = quantized_uv_losses(u_bins, u_res, v_bins, v_res, xy, torch.tensor([[part]]), u, v, valid, (1, 1))
    assert direct.item() == pytest.approx(d * d, rel=1e-4)  # 2 x d^2 / 2
    assert quantized.item() == pytest.approx(direct.item(), rel=1e-4)


def test_coarse_segmentation_targets_are_area_fractions():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, :2, :2] = 1  # the top-left output pixel is all person
    labels[0, 2, 2] = 1  # a quarter of the bottom-right one
    logits = torch.zeros(2, 2, 2, 2)
    logits[:, 1] = 1.5
    keep = torch.tensor([True, False])
    # Soft cross-entropy, hand-solved: p = sigmoid(1.5) everywhere; targets 1, 0, 0, 1/4.
    person, background = F.softplus(torch.tensor(-1.5)), F.softplus(torch.tensor(1.5))
    expected = (person + 2 * background + (0.25 * person + 0.75 * background)) / 4
    assert coarse_segmentation_ce(logits, labels, keep).item() == pytest.approx(expected.item(), rel=1e-6)
    assert coarse_segmentation_ce(logits, labels, torch.tensor([False, False])).item() == 0.0


def test_area_fractions_do_not_shift_a_mask():
    # A mask and its mirror image give mirrored targets: no half-pixel preference for either side.
    labels = (torch.rand(1, 16, 16) > 0.5).long()
    fractions = area_fractions(labels, 2, (8, 8))
    mirrored = area_fractions(labels.flip(-1), 2, (8, 8))
    torch.testing.assert_close(mirrored, fractions.flip(-1))
    assert fractions[0, 1].mean().item() == pytest.approx(labels.float().mean().item(), abs=1e-6)


# ----------------------------------------------------------------------------- head
@pytest.mark.parametrize(
    ("feature_stride", "resolution", "expected"),
    [(8, "stride", (32, 48)), (16, "stride", (16, 24)), (8, "crop", (64, 96)), (4, "predictor", (32, 48)),
     (8, "predictor", (16, 24))],
)
def test_head_output_sizes(feature_stride, resolution, expected):
    strides = [4, 8, 16, 32]
    feats = [torch.randn(2, 8 * (i + 1), 64 // s, 96 // s) for i, s in enumerate(strides)]
    head = DensePoseHead([8, 16, 24, 32], strides, {"a": 25, "b": 2}, feature_stride=feature_stride,
                         width=16, num_convs=2, output_resolution=resolution, norm="none")
    out = head(feats, (64, 96))
    assert out["a"].shape == (2, 25, *expected) and out["b"].shape == (2, 2, *expected)
    assert len(head.lateral) == sum(s >= feature_stride for s in strides)


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_head_norm_follows_each_tower_conv(norm):
    head = DensePoseHead([8, 16, 24, 32], [4, 8, 16, 32], {"a": 3}, feature_stride=8, width=32, num_convs=3,
                         output_resolution="stride", norm=norm)
    kinds = [type(m).__name__ for m in head.tower]
    expected = {"gn": "GroupNorm", "bn": "BatchNorm2d"}[norm]
    assert kinds == ["Conv2d", expected, "ReLU"] * 3
    assert all(m.bias is None for m in head.tower if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="norm must be one of"):
        DensePoseHead([8], [8], {"a": 3}, feature_stride=8, width=8, num_convs=1, output_resolution="stride",
                      norm="ln")


# ----------------------------------------------------------------------------- viz
def test_iuv_to_rgb_and_points():
    iuv = points_to_iuv(torch.tensor([[1.5, 0.5], [0.2, 2.9]]), torch.tensor([3, 24]),
                        torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), (3, 2))
    assert iuv[:, 0, 1].tolist() == [3.0, 1.0, 0.0] and iuv[:, 2, 0].tolist() == [24.0, 0.0, 1.0]
    rgb = iuv_to_rgb(iuv)
    assert rgb.shape == (3, 2, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [0, 0, 0]  # background
    assert rgb[0, 1].tolist() != rgb[2, 0].tolist()


# ----------------------------------------------------------------------------- the method
def _method(**options):
    weights = options.pop("loss_weights", WEIGHTS)
    return make_method("densereg", loss_weights=weights, seed=None, **{"head_width": 16, "head_convs": 2, **options})


@pytest.fixture(scope="module")
def batch(body):
    return make_batch(body, n=4, size=(64, 64), seed=3)


@pytest.fixture(scope="module")
def targets(batch) -> Targets:
    return _method().targets(batch)


def test_batch_factory_is_consistent(body):
    b = make_batch(body, n=16, size=(64, 64), seed=0)
    again = make_batch(body, n=16, size=(64, 64), seed=0)
    for key, value in b.items():
        torch.testing.assert_close(value, again[key], msg=key)
    assert b["image"].shape == (16, 3, 64, 64)
    assert b["dp_valid"].sum(1).min() >= 40
    # Points lie on the mask, and the mask's box holds them and the visible keypoints.
    xy = b["dp_xy"].long()
    on_mask = b["mask"][torch.arange(16)[:, None], xy[..., 1], xy[..., 0]]
    assert bool((on_mask[b["dp_valid"]] == 1).all())
    x0, y0, w, h = b["bbox"].unbind(-1)
    kp = b["kp2d"]
    assert bool((kp[..., 2] == 2).all())
    assert bool(((kp[..., 0] >= x0[:, None] - 2) & (kp[..., 0] <= (x0 + w)[:, None] + 2)).all())
    assert float(b["area"].min()) > 0.06 * 64 * 64
    assert bool((torch.maximum(w, h) > 0.7 * 64).all()) and bool((torch.maximum(w, h) <= 64).all())
    # The full-mesh surface points map back to the points' own labels.
    from densehmr.body.iuv_mapping import IUVMapper

    mapper = IUVMapper(body.charts)
    valid = b["dp_valid"]
    part, u, v = mapper.to_iuv(b["dp_face"][valid], b["dp_bary"][valid])
    assert bool((part == b["dp_I"][valid]).all())
    torch.testing.assert_close(u, b["dp_U"][valid], atol=1e-4, rtol=0)
    # kp3d is the H36M regressor on the camera-frame mesh given by the parameters.
    from densehmr.body.smpl_layout import make_smplx

    smpl = make_smplx(body.model_file, body.vertex_ids)
    verts = smpl(betas=b["betas"], body_pose=b["body_pose"], global_orient=b["global_orient"],
                 transl=torch.zeros(16, 3)).vertices + b["cam_t"][:, None]
    torch.testing.assert_close(b["kp3d"][..., :3], body.regressors["h36m17"] @ verts, atol=1e-5, rtol=0)


@pytest.mark.parametrize("regression", ["direct", "quantized"])
def test_forward_predict_shapes(batch, regression):
    model = _method(regression=regression, num_bins=4).eval()
    with torch.no_grad():
        out = model(batch["image"])
        pred = model.predict(out, batch)
    assert out["part_logits"].shape == (4, 25, 32, 32)
    if regression == "quantized":
        assert out["u_bins"].shape == (4, 25, 4, 32, 32)
    assert pred.iuv.shape == (4, 3, 64, 64) and pred.mask.shape == (4, 64, 64)
    assert bool(((pred.iuv[:, 0] > 0) <= (pred.mask > 0)).all())


def test_predict_hand_solved(batch):
    model = _method(mask_threshold=None)
    h = w = 32
    out = {
        "part_logits": torch.zeros(4, 25, h, w),
        "coarse_logits": torch.zeros(4, 2, h, w),
        "u": torch.zeros(4, 25, h, w),
        "v": torch.zeros(4, 25, h, w),
    }
    out["part_logits"][:, 3] = 1.0
    out["coarse_logits"][..., : w // 2] = torch.tensor([0.0, 1.0])[:, None, None]  # person on the left
    out["u"][:, 3], out["v"][:, 3] = 0.25, 1.5
    pred = model.predict(out, batch)
    # Output pixel 15 (person) covers crop columns 30-31; bilinear upsampling still favours it at 32.
    left, right = pred.iuv[..., :, :33], pred.iuv[..., :, 33:]
    assert bool((left[:, 0] == 3).all()) and bool((right == 0).all())
    torch.testing.assert_close(left[:, 1], torch.full((4, 64, 33), 0.25))
    torch.testing.assert_close(left[:, 2], torch.ones(4, 64, 33))  # clamped to [0, 1]
    assert pred.mask[..., :33].eq(1).all() and pred.mask[..., 33:].eq(0).all()


@pytest.mark.parametrize("coarse_classes", [2, 15])
def test_mask_threshold_on_the_person_probability(batch, coarse_classes):
    h = w = 32
    out = {"part_logits": torch.zeros(4, 25, h, w), "u": torch.zeros(4, 25, h, w), "v": torch.zeros(4, 25, h, w),
           "coarse_logits": torch.zeros(4, coarse_classes, h, w)}
    out["part_logits"][:, 5] = 1.0
    # P(background) = 0.6 everywhere; the person's 0.4 is spread over the other classes.
    person = torch.tensor(0.4 / (coarse_classes - 1))
    out["coarse_logits"][:, 0] = torch.log(torch.tensor(0.6))
    out["coarse_logits"][:, 1:] = torch.log(person)
    preds = {t: _method(coarse_classes=coarse_classes, mask_threshold=t).predict(out, batch) for t in (None, 0.3, 0.5)}
    assert preds[None].mask.eq(0).all() and preds[0.5].mask.eq(0).all()  # background is the arg-max; 0.4 < 0.5
    assert preds[0.3].mask.eq(1).all() and preds[0.3].iuv[:, 0].eq(5).all()
    with pytest.raises(ValueError, match="mask_threshold"):
        _method(mask_threshold=1.0)


@pytest.mark.parametrize("regression", ["direct", "quantized"])
def test_ablated_term_is_not_computed(batch, targets, regression, monkeypatch):
    weights = {**WEIGHTS, "coarse_seg": 0.0}
    model = _method(regression=regression, loss_weights=weights)

    def forbidden(*args, **kwargs):
        raise AssertionError("an ablated term was computed")

    monkeypatch.setattr("densehmr.methods.densereg.coarse_segmentation_ce", forbidden)
    out = model(batch["image"])
    total, weighted = model.compute_loss(out, batch, targets)
    expected = {"part_ce", "uv"} | ({"uv_bin"} if regression == "quantized" else set())
    assert set(weighted) == expected
    torch.testing.assert_close(total, sum(weighted.values()))
    # The same terms with the default weights: the ablation only removes its own term.
    monkeypatch.undo()
    full = _method(regression=regression)
    full.load_state_dict(model.state_dict())
    _, all_terms = full.compute_loss(full(batch["image"]), batch, targets)
    for key in expected:
        torch.testing.assert_close(all_terms[key], weighted[key])


def _block_fractions(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each class's share of every 2 x 2 block of (B, H, W) labels: (B, C, H/2, W/2), the coarse targets of
    a head whose output is at half the crop's resolution."""
    b, h, w = labels.shape
    one_hot = F.one_hot(labels, num_classes).float().view(b, h // 2, 2, w // 2, 2, num_classes)
    return one_hot.mean((2, 4)).permute(0, 3, 1, 2)


def test_loss_terms_match_the_loss_functions(batch, targets):
    model = _method()
    out = model(batch["image"])
    terms = model.loss_terms(out, batch, targets)
    valid = batch["dp_valid"]
    ce = dp_losses.part_cross_entropy(out["part_logits"], batch["dp_xy"], batch["dp_I"], valid, (64, 64))
    torch.testing.assert_close(terms["part_ce"], ce)
    seg = F.cross_entropy(out["coarse_logits"], _block_fractions(batch["mask"].long(), 2))
    torch.testing.assert_close(terms["coarse_seg"], seg)


def test_coarse_parts_use_the_14_part_masks(batch, targets):
    model = _method(coarse_classes=15)
    out = model(batch["image"])
    assert out["coarse_logits"].shape[1] == 15
    seg = F.cross_entropy(out["coarse_logits"], _block_fractions(batch["mask_parts"], 15))
    torch.testing.assert_close(model.loss_terms(out, batch, targets)["coarse_seg"], seg)


@pytest.mark.parametrize("regression", ["direct", "quantized"])
def test_gradient_reaches_head_and_backbone(batch, targets, regression):
    model = _method(regression=regression, num_bins=4)
    total, _ = model.compute_loss(model(batch["image"]), batch, targets)
    total.backward()
    for name in ("backbone.conv1.weight", "backbone.layer4.1.conv2.weight", "head.lateral.0.weight",
                 "head.tower.0.weight", "head.predictor.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_pictures(batch, targets):
    model = _method().eval()
    b = dict(batch)
    with torch.no_grad():
        out = model(b["image"])
        pics = model.pictures(out, b, model.predict(out, b), targets)
    pic = pics["iuv"]
    assert pic.dtype == np.uint8 and pic.shape == (4 * 64, 3 * 64 + 2 * 2, 3)
    # The GT panel is the rendered GT mesh (its silhouette is the mask), not only the points.
    gt_panel = pic[:64, 66:130]
    assert ((gt_panel.sum(-1) > 0) == (b["mask"][0].numpy() > 0)).mean() > 0.99


def _overfit(body, regression: str, steps: int, **options) -> tuple[float, float]:
    """Train on 16 rendered samples; GPS AP (0..1) of the trained net on them, and seconds taken."""
    from densehmr.metrics import DensePoseAP
    torch.manual_seed(0)
    data = make_batch(body, n=16, size=(64, 64), seed=0)
    # Stride-4 features read at the crop's resolution: at 64 x 64 the limbs are 2-3 px wide and the coarse mask
    # gates the parts.
    model = _method(regression=regression, head_width=64, head_convs=4, feature_stride=4, output_resolution="stride",
                    **options)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    model.train()
    targets = model.targets(data)
    for _ in range(steps):
        total, _ = model.compute_loss(model(data["image"]), data, targets)
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    metric = DensePoseAP(body.geodesic, modes=("gps",))
    with torch.no_grad():
        pred = model.predict(model(data["image"]), data)
    metric.update_crops(pred.iuv, data["dp_xy"], data["dp_I"], data["dp_U"], data["dp_V"], data["dp_valid"],
                        data["mask"] > 0.5, data["bbox"], data["has_dp"])
    return float(metric.compute()["gps_ap"]), time.perf_counter() - start


@pytest.mark.slow
def test_overfit_sixteen_samples_reaches_gps_ap_80(body):
    ap, seconds = _overfit(body, "direct", steps=250)
    assert ap >= 0.80, f"GPS AP {ap:.3f} after {seconds:.0f} s"


def test_rendered_supervision_is_zero_for_maps_equal_to_the_rendered_gt(batch, targets):
    """With `supervision=rendered`, maps that are the GT mesh's rendered IUV give no part or U, V loss."""
    model = _method(supervision="rendered")
    b = dict(batch)
    out = model(b["image"])
    iuv, keep = model.gt_iuv(b, targets, tuple(out["part_logits"].shape[-2:]))
    assert keep.all() and (iuv[:, 0] > 0).sum() > 100
    part = iuv[:, 0].long()
    perfect = {
        **out,
        "part_logits": F.one_hot(part, 25).permute(0, 3, 1, 2).float() * 40.0,
        "u": iuv[:, 1:2].expand(-1, 25, -1, -1).clone(),
        "v": iuv[:, 2:3].expand(-1, 25, -1, -1).clone(),
    }
    terms = model.loss_terms(perfect, b, targets)
    assert terms["part_ce"].item() < 1e-6 and terms["uv"].item() < 1e-6
    # The annotated points of the same samples are not the target any more: points mode scores them.
    assert _method().loss_terms(perfect, b, targets)["part_ce"].item() > 1e-3


def test_rendered_supervision_keeps_the_points_of_samples_without_a_mesh(batch, targets):
    b = dict(batch)
    b["has_smpl"] = torch.zeros_like(b["has_smpl"])  # vertices are there, but no sample has a GT mesh
    points, rendered = _method(), _method(supervision="rendered")
    rendered.load_state_dict(points.state_dict())
    out = points(b["image"])
    expected, got = points.loss_terms(out, b, targets), rendered.loss_terms(out, b, targets)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
