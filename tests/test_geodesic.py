"""Geodesics against closed forms (sphere great circles, plane), evaluation points, kappa, condensed order."""

import numpy as np
import pytest
import trimesh

from densehmr.body.assets import COARSE_PARTS
from densehmr.body.geodesic import (
    condense,
    expand_condensed,
    geodesic_distances,
    mean_geodesic_per_coarse_part,
    sample_eval_points,
)


def random_points(num_faces: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    return rng.integers(0, num_faces, n), np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)


def positions(v, f, points):
    return (v[f[points[0]]] * points[1][:, :, None]).sum(1)


def plane_grid(nx: int, ny: int, width: float, height: float):
    xs, ys = np.meshgrid(np.linspace(0, width, nx + 1), np.linspace(0, height, ny + 1))
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    idx = np.arange(xs.size).reshape(xs.shape)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    return v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    pts = random_points(len(f), 200, 0)
    p = positions(v, f, pts)
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    great_circle = np.arccos(np.clip(unit @ unit.T, -1, 1))
    return v, f, pts, p, great_circle


def relative_error(dist, truth):
    iu = np.triu_indices(len(truth), 1)
    return (dist[iu] - truth[iu]) / truth[iu]


def test_sphere_matches_great_circles(sphere):
    v, f, pts, p, great_circle = sphere
    dist = geodesic_distances(v, f, pts, pts)
    assert dist.dtype == np.float32 and dist.shape == (200, 200)
    err = relative_error(dist, great_circle)
    # 642-vertex icosphere: measured +0.5% mean (graph detours minus the polyhedron being ~0.4% short).
    assert err.mean() < 0.01
    assert np.median(np.abs(err)) < 0.03


def test_longer_unfolding_and_steiner_nodes_reduce_error(sphere):
    v, f, pts, p, great_circle = sphere

    def err(**kw):
        return relative_error(geodesic_distances(v, f, pts, pts, **kw), great_circle).mean()

    one_face, default = err(unfold=1), err()
    assert default < 0.5 * one_face  # measured 2.1% -> 0.5%
    assert err(steiner=2) < default


def test_symmetric_and_never_below_chord(sphere):
    v, f, pts, p, _ = sphere
    dist = geodesic_distances(v, f, pts, pts)
    chord = np.linalg.norm(p[:, None] - p[None], axis=-1)
    np.testing.assert_allclose(dist, dist.T, rtol=1e-6, atol=1e-7)
    assert (dist >= chord.astype(np.float32) - 1e-6).all()
    np.testing.assert_array_equal(np.diag(dist), 0.0)


def test_rectangular_query_matches_square(sphere):
    v, f, pts, _, _ = sphere
    full = geodesic_distances(v, f, pts, pts)
    src = (pts[0][:30], pts[1][:30])
    tgt = (pts[0][50:170], pts[1][50:170])
    np.testing.assert_allclose(geodesic_distances(v, f, src, tgt), full[:30, 50:170], rtol=1e-6)


def test_plane_is_nearly_euclidean():
    v, f = plane_grid(20, 20, 1.0, 1.0)
    pts = random_points(len(f), 150, 1)
    p = positions(v, f, pts)
    dist = geodesic_distances(v, f, pts, pts)
    err = relative_error(dist, np.linalg.norm(p[:, None] - p[None], axis=-1))
    # A regular grid is the graph's worst case: measured +1.1% mean.
    assert err.mean() < 0.02 and err.max() < 1.0


def test_same_face_is_exact():
    v, f = plane_grid(2, 2, 1.0, 1.0)
    a = (np.array([3]), np.array([[0.2, 0.3, 0.5]]))
    b = (np.array([3]), np.array([[0.6, 0.3, 0.1]]))
    expect = np.linalg.norm(positions(v, f, a) - positions(v, f, b))
    assert geodesic_distances(v, f, a, b)[0, 0] == pytest.approx(expect, rel=1e-6)


def test_sample_eval_points_cover_parts_by_area():
    v, f = plane_grid(40, 10, 4.0, 1.0)
    x = v[f].mean(1)[:, 0]
    part = np.where(x < 3.0, 7, 9) + (x > 3.8)  # areas 3 : 0.8 : 0.2
    uv = np.zeros((len(f), 3, 2))
    uv[..., :] = v[f][..., :2] / 4.0  # a non-degenerate layout for every face
    face, bary = sample_eval_points(v, f, part, uv, n=400, seed=0)
    assert face.shape == (400,) and bary.shape == (400, 3) and bary.dtype == np.float32
    counts = np.bincount(part[face], minlength=11)[[7, 9, 10]]
    assert counts.sum() == 400 and counts.min() >= 20
    np.testing.assert_allclose(counts, [300, 80, 20], atol=3)
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-6)
    assert (bary >= 0).all()
    again = sample_eval_points(v, f, part, uv, n=400, seed=0)
    np.testing.assert_array_equal(again[0], face)
    np.testing.assert_array_equal(again[1], bary)


def test_sample_eval_points_spread_better_than_random():
    v, f = plane_grid(30, 30, 1.0, 1.0)
    part = np.full(len(f), 2)
    uv = v[f][..., :2]
    pts = sample_eval_points(v, f, part, uv, n=100, seed=1)
    probe = np.random.default_rng(5).random((4000, 2))

    def covering_radius(xy):
        return np.linalg.norm(probe[:, None] - xy[None], axis=-1).min(1).max()

    sampled = covering_radius(positions(v, f, pts)[:, :2])
    random = covering_radius(np.random.default_rng(6).random((100, 2)))
    assert sampled < 0.7 * random
    assert sampled < 0.12  # a 10 x 10 lattice would give ~0.07


def test_degenerate_uv_faces_are_skipped():
    v, f = plane_grid(6, 6, 1.0, 1.0)
    part = np.full(len(f), 3)
    uv = v[f][..., :2].copy()
    uv[::2] = 0.5  # every other face collapses in UV
    face, _ = sample_eval_points(v, f, part, uv, n=30, seed=0)
    assert (face % 2 == 1).all()


def test_mean_geodesic_on_unit_square_matches_closed_form():
    # Mean distance between two uniform points of the unit square: (2 + sqrt2 + 5 ln(1 + sqrt2)) / 15.
    v, f = plane_grid(24, 24, 1.0, 1.0)
    part = np.full(len(f), 3)  # right hand: coarse part 2
    pts = sample_eval_points(v, f, part, v[f][..., :2], n=400, seed=0)
    dist = geodesic_distances(v, f, pts, pts)
    kappa = mean_geodesic_per_coarse_part(dist, part[pts[0]], np.asarray(COARSE_PARTS))
    closed_form = (2 + np.sqrt(2) + 5 * np.log(1 + np.sqrt(2))) / 15
    assert kappa.shape == (9,)
    assert kappa[2] == pytest.approx(closed_form, rel=0.03)
    assert (np.delete(kappa, 2) == 0).all()


def test_mean_geodesic_measures_each_side_not_the_body_width():
    # Two unit squares 10 apart as the right and left hands: kappa is the square's, not ~10.
    v, f = plane_grid(16, 16, 1.0, 1.0)
    v = np.concatenate([v, v + [10.0, 0.0, 0.0]])
    f = np.concatenate([f, f + len(v) // 2])
    part = np.repeat([3, 4], len(f) // 2)
    pts = sample_eval_points(v, f, part, v[f][..., :2], n=300, seed=0)
    dist = geodesic_distances(v, f, pts, pts)
    kappa = mean_geodesic_per_coarse_part(dist, part[pts[0]], np.asarray(COARSE_PARTS))
    assert kappa[2] == pytest.approx(0.5214, rel=0.04)


def test_mean_geodesic_on_sphere_is_quarter_circumference(sphere):
    # Two uniform points of the unit sphere are pi/2 apart on average (the whole sphere as the torso).
    v, f, _, _, _ = sphere
    part = np.full(len(f), 1)
    pts = sample_eval_points(v, f, part, np.tile([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], (len(f), 1, 1)), n=300)
    dist = geodesic_distances(v, f, pts, pts)
    kappa = mean_geodesic_per_coarse_part(dist, part[pts[0]], np.asarray(COARSE_PARTS))
    assert kappa[1] == pytest.approx(np.pi / 2, rel=0.03)


def test_mean_geodesic_averages_pieces_and_ignores_other_coarse_parts():
    # Points: two on the right hand (1 apart), two on the left hand (3 apart), one on the torso.
    dist = np.array(
        [
            [0, 1, 9, 9, 9],
            [1, 0, 9, 9, 9],
            [9, 9, 0, 3, 9],
            [9, 9, 3, 0, 9],
            [9, 9, 9, 9, 0],
        ],
        dtype=float,
    )
    kappa = mean_geodesic_per_coarse_part(dist, np.array([3, 3, 4, 4, 2]), np.asarray(COARSE_PARTS))
    np.testing.assert_allclose(kappa, [0, 0, 2.0, 0, 0, 0, 0, 0, 0])


def test_condense_order_and_inverse():
    rng = np.random.default_rng(0)
    n = 7
    d = rng.random((n, n))
    d = d + d.T
    np.fill_diagonal(d, 0)
    c = condense(d)
    assert c.shape == (n * (n - 1) // 2,)
    for b in range(n):
        for a in range(b):
            assert c[b * (b - 1) // 2 + a] == d[a, b]
    np.testing.assert_array_equal(expand_condensed(c), d)
    with pytest.raises(ValueError):
        expand_condensed(np.zeros(4))


def test_condense_order_is_densepose_evaluator_order():
    # DensePose's getDistancesUV index arithmetic (0-based i != j), transcribed.
    n = 9

    def densepose_index(i, j):
        if j > i:
            i, j = j, i
        i, j = n - i - 1, n - j - 1
        k = (n * (n - 1) / 2) - (n - i) * ((n - i) - 1) / 2 + j - i - 1
        return int((n * n - n) / 2 - k - 1)

    d = np.arange(n * n, dtype=float).reshape(n, n)
    d = d + d.T
    c = condense(d)
    for i in range(n):
        for j in range(n):
            if i != j:
                assert c[densepose_index(i, j)] == d[i, j]
