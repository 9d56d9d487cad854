"""IUVMapper: (face, bary) -> IUV -> (face, bary) round trip in 3D; off-chart queries snap to the chart."""


import numpy as np
import pytest
import torch
from meshes import sphere_24_parts

from densehmr.body.assets import Charts
from densehmr.body.charts import build_charts
from densehmr.body.iuv_mapping import IUVMapper


def random_surface_points(num_faces: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    return torch.as_tensor(rng.integers(0, num_faces, n)), torch.as_tensor(bary, dtype=torch.float32)


def closest_chart_distance(tri: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Brute force: distance from points q (P, 2) to the union of UV triangles tri (F, 3, 2)."""
    a, b, c = (tri[None, :, k] for k in range(3))
    p = q[:, None]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    w1 = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / den
    w2 = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / den
    inside = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
    best = np.full(q.shape[0], np.inf)
    for s, e in ((a, b), (b, c), (c, a)):
        t = np.clip(((p - s) * (e - s)).sum(-1) / ((e - s) ** 2).sum(-1), 0, 1)
        d = np.linalg.norm(s + t[..., None] * (e - s) - p, axis=-1)
        best = np.minimum(best, d.min(1))
    return np.where(inside.any(1), 0.0, best)


@pytest.fixture(scope="module")
def sphere():
    v, f, part = sphere_24_parts(3)
    uv = build_charts(v, f, part)
    charts = Charts(torch.as_tensor(f), torch.as_tensor(part), torch.as_tensor(uv))
    return v, f, part, uv, IUVMapper(charts)


def test_to_iuv_interpolates_corner_uvs(sphere):
    v, f, part, uv, mapper = sphere
    face, bary = random_surface_points(len(f), 500, 0)
    p, u, w = mapper.to_iuv(face, bary)
    expect = (uv[face.numpy()] * bary.numpy()[:, :, None]).sum(1)
    np.testing.assert_array_equal(p.numpy(), part[face.numpy()])
    np.testing.assert_allclose(np.stack([u, w], 1), expect, atol=1e-6)


def test_round_trip_recovers_surface_point(sphere):
    v, f, part, uv, mapper = sphere
    face, bary = random_surface_points(len(f), 20000, 1)
    p, u, w = mapper.to_iuv(face, bary)
    face2, bary2 = mapper.to_face_bary(p, u, w)
    assert face2.dtype == torch.int64 and bary2.dtype == torch.float32
    x1 = (v[f[face.numpy()]] * bary.numpy()[:, :, None]).sum(1)
    x2 = (v[f[face2.numpy()]] * bary2.numpy()[:, :, None]).sum(1)
    # Unit sphere: 1e-6 relative to the body size.
    assert np.linalg.norm(x1 - x2, axis=1).max() < 1e-6
    np.testing.assert_allclose(bary2.sum(1).numpy(), 1.0, atol=1e-6)
    assert (bary2 >= 0).all()


def test_off_chart_queries_snap_to_closest_chart_point(sphere):
    v, f, part, uv, mapper = sphere
    rng = np.random.default_rng(2)
    for p in (1, 4, 17):
        q = rng.random((3000, 2))
        face, bary = mapper.to_face_bary(
            torch.full((len(q),), p), torch.as_tensor(q[:, 0]), torch.as_tensor(q[:, 1])
        )
        assert (part[face.numpy()] == p).all()
        _, u, w = mapper.to_iuv(face, bary)
        got = np.linalg.norm(np.stack([u, w], 1) - q, axis=1)
        expect = closest_chart_distance(uv[part == p].astype(np.float64), q)
        assert (expect > 1e-3).any()  # some queries are off the chart
        np.testing.assert_allclose(got, expect, atol=2e-6)


def test_background_and_missing_parts_give_no_face(sphere):
    v, f, part, uv, _ = sphere
    keep = part != 7
    mapper = IUVMapper(
        Charts(torch.as_tensor(f[keep]), torch.as_tensor(part[keep]), torch.as_tensor(uv[keep]))
    )
    face, bary = mapper.to_face_bary(
        torch.tensor([0, 7, 8]), torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.5])
    )
    assert face.tolist()[:2] == [-1, -1] and face[2] >= 0
    assert (bary[:2] == 0).all()


def test_batch_shape_and_device_copy(sphere):
    v, f, part, uv, mapper = sphere
    face, bary = random_surface_points(len(f), 60, 3)
    p, u, w = mapper.to_iuv(face.reshape(3, 20), bary.reshape(3, 20, 3))
    face2, bary2 = mapper.to("cpu").to_face_bary(p, u, w)
    assert face2.shape == (3, 20) and bary2.shape == (3, 20, 3)
    if torch.cuda.is_available():
        gpu = mapper.to("cuda")
        face3, bary3 = gpu.to_face_bary(p.cuda(), u.cuda(), w.cuda())
        np.testing.assert_array_equal(face3.cpu().numpy(), face2.numpy())
        np.testing.assert_allclose(bary3.cpu().numpy(), bary2.numpy(), atol=1e-5)


def test_throughput_100k_queries():
    # 27k faces: a 120 x 114 quad grid cut into 24 strips, each strip's chart its own normalized coords.
    nx, ny = 120, 114
    xs, ys = np.meshgrid(np.arange(nx + 1, dtype=float), np.arange(ny + 1, dtype=float))
    idx = np.arange(xs.size).reshape(xs.shape)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    xy = np.stack([xs.ravel(), ys.ravel()], 1)[f]  # (F, 3, 2)
    part = (xy[..., 0].mean(1) // 5).astype(int) + 1
    strip_origin = np.zeros_like(xy)
    strip_origin[..., 0] = 5 * (part[:, None] - 1)
    uv = (xy - strip_origin) / [5, ny]
    mapper = IUVMapper(
        Charts(torch.as_tensor(f), torch.as_tensor(part), torch.as_tensor(uv, dtype=torch.float32))
    )
    face, bary = random_surface_points(len(f), 100_000, 4)
    p, u, w = mapper.to_iuv(face, bary)
    face2, bary2 = mapper.to_face_bary(p, u, w)
    x1 = (xy[face.numpy()] * bary.numpy()[:, :, None]).sum(1)
    x2 = (xy[face2.numpy()] * bary2.numpy()[:, :, None]).sum(1)
    assert np.abs(x1 - x2).max() < 1e-4  # grid units (a face is 1 x 1)
