"""DCT's dense keypoint loss against hand-solved cases, a loop reference and the rendered batch."""

import pytest
import torch

from densehmr.losses.dense_correspondence import dense_keypoint_l1, surface_points_2d

# Two triangles of a unit square scaled to 10 px, offset to (20, 30): corners 0 (20,30), 1 (30,30),
# 2 (30,40), 3 (20,40); face 0 = (0,1,2), face 1 = (0,2,3).
SQUARE = torch.tensor([[[20.0, 30.0], [30.0, 30.0], [30.0, 40.0], [20.0, 40.0]]])
FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])
FACE = torch.tensor([[0, 1, 1]])
BARY = torch.tensor([[[0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.25, 0.75]]])
# By hand: 0.2 (20,30) + 0.5 (30,30) + 0.3 (30,40) = (28, 33); the centroid of (20,30),(30,40),(20,40)
# is (70/3, 110/3); 0.25 (30,40) + 0.75 (20,40) = (22.5, 40).
HAND_XY = torch.tensor([[[28.0, 33.0], [70 / 3, 110 / 3], [22.5, 40.0]]])
ALL = torch.ones(1, 3, dtype=torch.bool)


def test_surface_points_hand_solved():
    torch.testing.assert_close(surface_points_2d(SQUARE, FACES, FACE, BARY), HAND_XY)


def test_points_at_their_barycentrics_give_zero():
    loss = dense_keypoint_l1(SQUARE, FACES, FACE, BARY, HAND_XY, ALL)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_known_shift_gives_its_l1():
    shift = torch.tensor([[[1.0, -2.0], [0.5, 0.5], [-3.0, 0.0]]])  # |dx| + |dy|: 3, 1, 3
    loss = dense_keypoint_l1(SQUARE, FACES, FACE, BARY, HAND_XY + shift, ALL, scale=2.0)
    assert loss.item() == pytest.approx(7 / 3 / 2 / 2.0, rel=1e-5)  # mean over points and x, y


def test_gradient_is_sign_times_barycentric():
    verts = SQUARE.clone().requires_grad_(True)
    xy = HAND_XY[:, :1] + torch.tensor([[[1.0, -1.0]]])  # target right of and above the prediction
    dense_keypoint_l1(verts, FACES, FACE[:, :1], BARY[:, :1], xy, ALL[:, :1]).backward()
    expected = torch.zeros(1, 4, 2)
    # d (|x - x_hat| + |y - y_hat|) / 2 / d x_k = -sign(x - x_hat) bary_k / 2
    expected[0, :3, 0] = -BARY[0, 0] / 2
    expected[0, :3, 1] = BARY[0, 0] / 2
    torch.testing.assert_close(verts.grad, expected)


def test_padding_points_contribute_nothing():
    verts = SQUARE.clone().requires_grad_(True)
    shift = torch.tensor([[[1.0, -2.0], [0.5, 0.5], [-3.0, 0.0]]])
    ref = dense_keypoint_l1(verts, FACES, FACE, BARY, HAND_XY + shift, ALL)
    (ref_grad,) = torch.autograd.grad(ref, verts)

    pad = 4  # two marked invalid, two "valid" that map to no face (face -1)
    face = torch.cat([FACE, torch.tensor([[1, -1, -1, -1]])], 1)
    bary = torch.cat([BARY, torch.full((1, pad, 3), float("nan"))], 1)
    xy = torch.cat([HAND_XY + shift, torch.full((1, pad, 2), 1e6)], 1)
    valid = torch.cat([ALL, torch.tensor([[False, False, True, True]])], 1)
    padded = dense_keypoint_l1(verts, FACES, face, bary, xy, valid)
    (padded_grad,) = torch.autograd.grad(padded, verts)
    torch.testing.assert_close(padded, ref)
    torch.testing.assert_close(padded_grad, ref_grad)


def test_sample_without_points_has_weight_zero():
    verts = torch.cat([SQUARE, SQUARE + 100.0]).requires_grad_(True)
    xy = torch.cat([HAND_XY + 1.0, HAND_XY])  # the second sample is off by 100 px, but unannotated
    valid = torch.stack([ALL[0], torch.zeros(3, dtype=torch.bool)])
    loss = dense_keypoint_l1(verts, FACES, FACE.expand(2, 3), BARY.expand(2, 3, 3), xy, valid)
    assert loss.item() == pytest.approx(1.0, rel=1e-5)
    (grad,) = torch.autograd.grad(loss, verts)
    assert grad[1].abs().sum() == 0


def test_no_valid_point_is_a_zero_in_the_graph():
    verts = SQUARE.clone().requires_grad_(True)
    loss = dense_keypoint_l1(verts, FACES, FACE, BARY, HAND_XY + 5.0, torch.zeros(1, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, verts)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_matches_a_loop_reference():
    gen = torch.Generator().manual_seed(3)
    b, v, f, p = 3, 30, 40, 25
    verts = torch.rand(b, v, 2, generator=gen) * 64
    faces = torch.randint(0, v, (f, 3), generator=gen)
    face = torch.randint(0, f, (b, p), generator=gen)
    bary = torch.rand(b, p, 3, generator=gen)
    bary = bary / bary.sum(-1, keepdim=True)
    xy = torch.rand(b, p, 2, generator=gen) * 64
    valid = torch.rand(b, p, generator=gen) > 0.3
    per_sample = []
    for i in range(b):
        total, count = 0.0, 0
        for j in range(p):
            if valid[i, j]:
                x_hat = sum(float(bary[i, j, k]) * verts[i, faces[face[i, j], k]] for k in range(3))
                total += float((x_hat - xy[i, j]).abs().sum()) / 2
                count += 1
        per_sample.append(total / count)
    loss = dense_keypoint_l1(verts, faces, face, bary, xy, valid, scale=32.0)
    assert loss.item() == pytest.approx(sum(per_sample) / b / 32.0, rel=1e-5)


def test_dct_normalization_weighs_each_person_alike():
    """DCT's trainer: weights P_max / n_i on sample i's points, a mean over all B x P_max x 2 entries,
    rescaled by B / (samples with points): the mean over persons of each one's mean point error."""
    verts = torch.cat([SQUARE, SQUARE, SQUARE])
    # Person 0: one point 3 px off in x (error 1.5); person 1: three points 1 px off in x and y
    # (error 1 each); person 2: no annotation (its points are far off, and ignored).
    xy = torch.cat([HAND_XY + torch.tensor([3.0, 0.0]), HAND_XY + 1.0, HAND_XY + 50.0])
    valid = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    loss = dense_keypoint_l1(verts, FACES, FACE.expand(3, 3), BARY.expand(3, 3, 3), xy, valid)

    b, p_max = 3, 3
    n = valid.sum(1, keepdim=True).float()
    weights = torch.where(valid, p_max / n.clamp(min=1), 0.0)[..., None].expand(b, p_max, 2)
    abs_err = torch.zeros(b, p_max, 2)
    abs_err[0, 0, 0] = 3.0
    abs_err[1] = 1.0
    official = (abs_err * weights).mean() * b / float(valid.any(1).sum())
    assert loss.item() == pytest.approx(official.item(), rel=1e-5)
    assert loss.item() == pytest.approx((1.5 + 1.0) / 2, rel=1e-5)  # the pooled mean would be 4.5 / 4


def test_rendered_batch_points_lie_on_their_faces(body):
    """The batch's DensePose points, mapped to (face, bary) on the full mesh, land near their pixels
    when the GT mesh is projected with the batch camera: the loss's annotation convention holds."""
    from batch_factory import make_batch

    from densehmr.body.smpl_layout import make_smplx

    batch = make_batch(body, n=2, size=(64, 64), seed=1)
    smpl = make_smplx(body.model_file, body.vertex_ids)
    with torch.no_grad():
        verts = smpl(
            betas=batch["betas"], body_pose=batch["body_pose"], global_orient=batch["global_orient"]
        ).vertices + batch["cam_t"][:, None]
    k = batch["cam_K"]
    verts_2d = k[:, None, :2, :2].diagonal(dim1=-2, dim2=-1) * verts[..., :2] / verts[..., 2:] + k[:, None, :2, 2]
    loss = dense_keypoint_l1(
        verts_2d, body.faces, batch["dp_face"], batch["dp_bary"], batch["dp_xy"], batch["dp_valid"]
    )
    assert batch["dp_valid"].sum() > 50
    assert loss.item() < 0.02  # px (measured ~2e-4); a wrong face or corner order is pixels off
