"""The open body: smplx compatibility, shape and pose sanity, charts, symmetry, geodesics."""

import numpy as np
import pytest
import torch

from densehmr.body.assets import PART_MIRROR
from densehmr.body.iuv_mapping import IUVMapper
from densehmr.body.smpl_layout import make_smplx


@pytest.fixture(scope="module")
def smpl(body):
    return make_smplx(body.model_file, body.vertex_ids)


def test_smplx_loads_and_zero_pose_joints_match_regressor(body, smpl):
    out = smpl()
    assert out.vertices.shape == (1, body.num_vertices, 3)
    expected = body.regressors["smpl24"] @ body.v_template
    torch.testing.assert_close(out.joints[0, :24], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.vertices[0], body.v_template, atol=1e-6, rtol=0)


def test_template_is_a_standing_t_pose(body):
    v = body.v_template
    height = float(v[:, 1].max() - v[:, 1].min())
    assert 1.5 <= height <= 1.9
    joints = body.regressors["smpl24"] @ v
    shoulder_l, wrist_l, shoulder_r, wrist_r = joints[16], joints[20], joints[17], joints[21]
    # Arms horizontal and out to the sides (left on +x as in SMPL); feet at the bottom, head on top.
    assert abs(float(wrist_l[1] - shoulder_l[1])) < 0.05 and float(wrist_l[0]) > 0.5
    assert abs(float(wrist_r[1] - shoulder_r[1])) < 0.05 and float(wrist_r[0]) < -0.5
    assert joints[15, 1] > joints[0, 1] > joints[7, 1]


def test_bending_left_elbow_moves_only_left_forearm_and_hand(body, smpl):
    pose = torch.zeros(1, 69)
    pose[0, 3 * (18 - 1) + 1] = 1.2  # left elbow about y
    moved = (smpl(body_pose=pose).vertices[0] - body.v_template).norm(dim=-1) > 1e-4
    weights = body.extras["weights"]
    forearm_and_hand = weights[:, [18, 20, 22]].sum(1) > 0
    assert moved.any()
    assert bool((moved <= forearm_and_hand).all())
    assert float(body.v_template[moved, 0].min()) > 0.0  # all on the left side


def test_surface_points_survive_iuv_round_trip(body):
    g = torch.Generator().manual_seed(0)
    n = 20000
    face = torch.randint(0, body.faces.shape[0], (n,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3)).sample((n,))
    mapper = IUVMapper(body.charts)
    part, u, v = mapper.to_iuv(face, bary)
    face2, bary2 = mapper.to_face_bary(part, u, v)
    x = (body.v_template[body.faces[face]] * bary[..., None]).sum(1)
    x2 = (body.v_template[body.faces[face2]] * bary2[..., None]).sum(1)
    err = (x - x2).norm(dim=-1)
    assert float((err < 1e-3).float().mean()) >= 0.99


def test_mirror_is_an_involution_and_parts_mirror(body):
    m = body.mirror
    assert torch.equal(m[m], torch.arange(body.num_vertices))
    mirrored = body.v_template[m] * torch.tensor([-1.0, 1.0, 1.0])
    assert float((mirrored - body.v_template).norm(dim=-1).max()) < 1e-3
    lm = body.lowpoly.mirror
    assert float((lm[lm] == torch.arange(len(lm))).float().mean()) > 0.95
    # The mirror of a face lies in the mirrored part.
    faces = body.faces.numpy()
    key = {tuple(sorted(f)): i for i, f in enumerate(faces)}
    mf = np.array([key[tuple(sorted(m.numpy()[f]))] for f in faces])
    part = body.charts.face_part.numpy()
    assert (np.asarray(PART_MIRROR)[part] == part[mf]).mean() > 0.97


def test_flip_iuv_twice_is_identity(body):
    g = torch.Generator().manual_seed(1)
    face = torch.randint(0, body.faces.shape[0], (2000,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3)).sample((2000,))
    part, u, v = IUVMapper(body.charts).to_iuv(face, bary)
    p2, u2, v2 = body.flip_iuv(*body.flip_iuv(part, u, v))
    assert float((p2 == part).float().mean()) > 0.98
    close = ((u2 - u).abs() < 0.02) & ((v2 - v).abs() < 0.02)
    assert float(close.float().mean()) > 0.95


def test_geodesics_are_metric_like(body):
    geo = body.geodesic
    n = geo.num_points
    assert n >= 2000 and set(geo.point_part.tolist()) == set(range(1, 25))
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.randint(0, n, (5000,), generator=g) for _ in range(3))
    dab, dba = geo.distance(a, b), geo.distance(b, a)
    torch.testing.assert_close(dab, dba)
    pos = (body.v_template[body.faces[geo.point_face]] * geo.point_bary[..., None]).sum(1)
    straight = (pos[a] - pos[b]).norm(dim=-1)
    assert bool((dab >= straight - 2e-3).all())  # 1 mm storage quantization
    assert bool((geo.distance(a, c) <= dab + geo.distance(b, c) + 2e-3).all())
    assert float(geo.distance(a, a).abs().max()) == 0.0


def test_lowpoly_size_upsampler_and_landmarker(body):
    low = body.lowpoly
    assert 300 <= low.num_vertices <= 700
    lv = low.from_full(body.v_template, body.faces)
    up = low.upsample(lv)
    assert float((up - body.v_template).norm(dim=-1).mean()) < 0.01
    coco_full = body.regressors["coco17"] @ body.v_template
    coco_low = low.landmarkers["coco17"] @ lv
    assert float((coco_full - coco_low).norm(dim=-1).max()) < 0.02
    for level in body.downsample:
        assert level.unique().numel() == level.numel()
    assert set(body.downsample[1].tolist()) <= set(body.downsample[0].tolist())
