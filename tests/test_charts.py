"""Charts: fold-free, one-to-one, oriented, normalized layouts; UV flip table checked in 3D."""

import numpy as np
import pytest
import torch
import trimesh
from meshes import sphere_24_parts
from scipy.spatial import cKDTree

import densehmr.body.charts as charts_module
from densehmr.body.assets import PART_MIRROR, Charts
from densehmr.body.charts import build_charts, build_uv_symmetry, flipped_fraction, mirror_faces
from densehmr.body.iuv_mapping import IUVMapper


def plane_grid(nx: int, ny: int, width: float, height: float, x0: float = 0.0):
    """Triangulated rectangle [x0, x0 + width] x [0, height] in z = 0; quad diagonals mirror at x = 0."""
    xs, ys = np.meshgrid(np.linspace(x0, x0 + width, nx + 1), np.linspace(0, height, ny + 1))
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    idx = np.arange(xs.size).reshape(xs.shape)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    right = (xs[:-1, :-1] + xs[:-1, 1:]).ravel() > 0
    first = np.where(right[:, None], np.stack([a, b, c], 1), np.stack([a, b, d], 1))
    second = np.where(right[:, None], np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    return v, np.concatenate([first, second])


def signed_area(uv):
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def cover_count(uv: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How many UV triangles (F, 3, 2) strictly contain each point (P, 2): brute force."""
    a, b, c = (uv[None, :, k] for k in range(3))
    p = points[:, None]

    def side(o, q):
        return (q[..., 0] - o[..., 0]) * (p[..., 1] - o[..., 1]) - (q[..., 1] - o[..., 1]) * (
            p[..., 0] - o[..., 0]
        )

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    inside = ((s1 > 1e-12) & (s2 > 1e-12) & (s3 > 1e-12)) | ((s1 < -1e-12) & (s2 < -1e-12) & (s3 < -1e-12))
    return inside.sum(1)


def uv_pieces(uv: np.ndarray) -> int:
    """Connected pieces of UV triangles joined by shared UV edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q = np.round(uv * 1e6).astype(np.int64)
    ends = [(q[:, k], q[:, (k + 1) % 3]) for k in range(3)]
    keys = {}
    rows, cols = [], []
    for fi in range(len(uv)):
        for a, b in ends:
            key = tuple(sorted([tuple(a[fi]), tuple(b[fi])]))
            if key in keys:
                rows.append(fi)
                cols.append(keys[key])
            else:
                keys[key] = fi
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(uv), len(uv)))
    return connected_components(graph, directed=False)[0]


@pytest.fixture(scope="module")
def sphere():
    v, f, part = sphere_24_parts(3)
    return v, f, part, build_charts(v, f, part)


@pytest.fixture(scope="module")
def mirrored(sphere):
    v, f, part, _ = sphere
    _, mirror = cKDTree(v).query(v * [-1, 1, 1])
    return mirror, build_charts(v, f, part, mirror=mirror)


def test_sphere_charts_fold_free_oriented_normalized(sphere):
    v, f, part, uv = sphere
    assert uv.shape == (len(f), 3, 2) and uv.dtype == np.float32
    assert flipped_fraction(uv, part) == 0.0
    # Outward-wound faces are counter-clockwise in every chart (consistent across parts).
    assert (signed_area(uv.astype(np.float64)) > 0).all()
    for p in range(1, 25):
        c = uv[part == p].reshape(-1, 2)
        np.testing.assert_allclose(c.min(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(c.max(0), 1.0, atol=1e-6)


def test_sphere_charts_one_to_one_and_one_piece(sphere):
    v, f, part, uv = sphere
    rng = np.random.default_rng(0)
    points = rng.random((2000, 2))
    for p in (1, 3, 8, 24):
        tri = uv[part == p].astype(np.float64)
        assert cover_count(tri, points).max() <= 1
        assert uv_pieces(tri) == 1


def test_charts_deterministic(sphere):
    v, f, part, uv = sphere
    np.testing.assert_array_equal(build_charts(v, f, part), uv)


def test_v_follows_long_axis_away_from_centre():
    # Two strips: A along x at x in [0.5, 2.5], B along y at y in [1, 3]; mesh centre ~ (0.75, 1.0).
    va, fa = plane_grid(16, 4, 2.0, 0.5, x0=0.5)
    va[:, 1] -= 0.25
    vb, fb = plane_grid(4, 16, 0.5, 2.0, x0=-0.25)
    vb[:, 1] += 1.0
    v = np.concatenate([va, vb])
    f = np.concatenate([fa, fb + len(va)])
    part = np.repeat([15, 16], [len(fa), len(fb)])
    uv = build_charts(v, f, part)
    for p, axis in ((15, 0), (16, 1)):
        sel = part == p
        assert np.corrcoef(v[f[sel]][..., axis].ravel(), uv[sel][..., 1].ravel())[0, 1] > 0.999


def test_flat_grid_chart_is_isometric_up_to_axis_scaling():
    v, f = plane_grid(20, 10, 2.0, 1.0)
    part = np.full(len(f), 5)
    uv = build_charts(v, f, part).astype(np.float64)
    xy = v[f][..., :2].reshape(-1, 2)
    # The layout is the plane itself: UV is an affine function of (x, y), V along the long side (x).
    design = np.c_[xy, np.ones(len(xy))]
    coef, *_ = np.linalg.lstsq(design, uv.reshape(-1, 2), rcond=None)
    assert np.abs(design @ coef - uv.reshape(-1, 2)).max() < 2e-3
    assert abs(coef[0, 1]) > 0.49 and abs(coef[1, 0]) > 0.99


def test_cylinder_is_cut_open():
    mesh = trimesh.creation.cylinder(radius=0.1, height=0.5, sections=32)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    f = f[np.abs(np.asarray(mesh.face_normals)[:, 2]) < 0.5]  # drop the caps: an open tube
    v, f = trimesh.remesh.subdivide(v, f)
    part = np.full(len(f), 9)
    uv = build_charts(v, f, part).astype(np.float64)
    assert (signed_area(uv) > 0).all()
    assert cover_count(uv, np.random.default_rng(1).random((2000, 2))).max() <= 1
    assert uv_pieces(uv) == 1


def test_nearly_closed_surface_stays_fold_free():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    f = f[v[f].mean(1)[:, 2] < 0.95]  # a sphere with a small hole
    part = np.full(len(f), 23)
    uv = build_charts(v, f, part).astype(np.float64)
    assert (signed_area(uv) > 0).all()
    assert cover_count(uv, np.random.default_rng(2).random((2000, 2))).max() <= 1


def test_polygon_self_intersection():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    bow_tie = square[[0, 1, 3, 2]]
    assert not charts_module._polygon_self_intersects(square)
    assert charts_module._polygon_self_intersects(bow_tie)


def test_overlap_fraction_by_rasterization():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.0], [1.0, 0.5]])
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    assert charts_module._overlap_fraction(square, tri) == 0.0
    # A third triangle (area 1/8) over the first: 1/8 of the unit square is covered twice.
    with_fold = np.concatenate([tri, [[4, 1, 5]]])
    assert charts_module._overlap_fraction(square, with_fold) == pytest.approx(0.125, abs=0.01)


def test_fixed_boundary_fallback_is_one_to_one(monkeypatch):
    # Force the fallback taken when a freed boundary overlaps itself: boundary kept on the circle.
    monkeypatch.setattr(charts_module, "_polygon_self_intersects", lambda poly: True)
    monkeypatch.setattr(charts_module, "_overlap_fraction", lambda uv, tri: 1.0)
    mesh = trimesh.creation.icosphere(subdivisions=3)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    f = f[v[f].mean(1)[:, 2] < 0.5]
    uv = build_charts(v, f, np.full(len(f), 2)).astype(np.float64)
    assert (signed_area(uv) > 0).all()
    assert cover_count(uv, np.random.default_rng(3).random((2000, 2))).max() <= 1
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    rim = np.isin(f, uniq[counts == 1])
    assert rim.any()
    np.testing.assert_allclose(((2 * uv[rim] - 1) ** 2).sum(-1), 1.0, atol=1e-6)


def test_disconnected_part_is_rejected():
    v, f = plane_grid(4, 4, 1.0, 1.0)
    part = np.full(len(f), 1)
    part[[0, len(f) - 1]] = 2  # two far-apart faces
    with pytest.raises(ValueError, match="part 2"):
        build_charts(v, f, part)


def test_flipped_fraction_counts_minority_orientation():
    uv = np.tile(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), (10, 1, 1))
    uv[3] = uv[3][[0, 2, 1]]
    uv[7, 2] = uv[7, 1]  # degenerate counts as flipped
    part = np.array([1] * 5 + [2] * 5)
    assert flipped_fraction(uv, part) == pytest.approx(0.2)


def test_mirror_faces_maps_corners():
    v, f, part = sphere_24_parts(2)
    _, mirror = cKDTree(v).query(v * [-1, 1, 1])
    mface, corner = mirror_faces(f, mirror)
    assert (mface >= 0).all()
    np.testing.assert_array_equal(f[mface[:, None], corner], mirror[f])


def _uv_to_xyz(mapper, v, f, part, u, vv):
    face, bary = mapper.to_face_bary(torch.as_tensor(part), torch.as_tensor(u), torch.as_tensor(vv))
    return (v[f[face.numpy()]] * bary.numpy()[:, :, None]).sum(1), mapper.to_iuv(face, bary)


@pytest.mark.parametrize("mirrored_charts", [False, True])
def test_uv_symmetry_maps_to_mirror_point(sphere, mirrored, mirrored_charts):
    v, f, part, uv = sphere
    mirror = mirrored[0]
    if mirrored_charts:
        uv = mirrored[1]
    size = 64
    table = build_uv_symmetry(f, part, uv, mirror, size=size)
    assert table.shape == (24, size, size, 2) and table.dtype == np.float32
    mapper = IUVMapper(Charts(torch.as_tensor(f), torch.as_tensor(part), torch.as_tensor(uv)))
    g = np.arange(size) / (size - 1)
    uu, vv = (a.ravel() for a in np.meshgrid(g, g, indexing="xy"))
    for p in (1, 4, 13, 24):
        x, (_, u_back, v_back) = _uv_to_xyz(mapper, v, f, np.full(uu.shape, p), uu, vv)
        q = PART_MIRROR[p]
        y, _ = _uv_to_xyz(
            mapper, v, f, np.full(uu.shape, q), table[p - 1, ..., 0].ravel(), table[p - 1, ..., 1].ravel()
        )
        # Every cell (snapped to the chart when off it) lands on the mirror image of its surface point.
        np.testing.assert_allclose(y, x * [-1, 1, 1], atol=1e-5)
        if mirrored_charts and p != q:
            inside = (np.abs(u_back.numpy() - uu) < 1e-6) & (np.abs(v_back.numpy() - vv) < 1e-6)
            np.testing.assert_allclose(table[p - 1, ..., 0].ravel()[inside], 1 - uu[inside], atol=1e-5)
            np.testing.assert_allclose(table[p - 1, ..., 1].ravel()[inside], vv[inside], atol=1e-5)


def test_mirrored_charts_reflect_u(sphere, mirrored):
    v, f, part, _ = sphere
    mirror, uv = mirrored
    mface, corner = mirror_faces(f, mirror)
    sel = np.flatnonzero(part == 4)  # mirror of part 3
    src = uv[mface[sel][:, None], corner[sel]]
    np.testing.assert_allclose(uv[sel][..., 0], 1 - src[..., 0], atol=1e-6)
    np.testing.assert_allclose(uv[sel][..., 1], src[..., 1], atol=1e-6)
    assert (signed_area(uv.astype(np.float64)) > 0).all()


def test_uv_symmetry_falls_back_when_topology_is_not_symmetric():
    v, f = plane_grid(8, 4, 2.0, 1.0, x0=-1.0)
    centroid_x = v[f].mean(1)[:, 0]
    part = np.where(centroid_x < 0, 3, 4)
    # Re-triangulate one quad on the right so its mirror triangles do not exist.
    q = np.flatnonzero(centroid_x > 0.5)[0]
    a, b, c = f[q]
    partner = np.flatnonzero((np.isin(f, [a, c]).sum(1) == 2) & (np.arange(len(f)) != q))[0]
    d = np.setdiff1d(f[partner], [a, c])[0]
    f[q], f[partner] = [a, b, d], [b, c, d]
    _, mirror = cKDTree(v).query(v * [-1, 1, 1])
    mface, _ = mirror_faces(f, mirror)
    assert (mface < 0).sum() == 4  # the two new faces and the two whose mirrors they replaced
    uv = build_charts(v, f, part)
    table = build_uv_symmetry(f, part, uv, mirror, size=32)
    mapper = IUVMapper(Charts(torch.as_tensor(f), torch.as_tensor(part), torch.as_tensor(uv)))
    g = np.arange(32) / 31
    uu, vv = (a.ravel() for a in np.meshgrid(g, g, indexing="xy"))
    for p in (3, 4):
        x, _ = _uv_to_xyz(mapper, v, f, np.full(uu.shape, p), uu, vv)
        y, _ = _uv_to_xyz(
            mapper, v, f, np.full(uu.shape, 7 - p), table[p - 1, ..., 0].ravel(), table[p - 1, ..., 1].ravel()
        )
        # The charts are affine images of the plane, so interpolating the mirrored vertices' UVs is
        # exact up to the layout's own residual.
        assert np.linalg.norm(y - x * [-1, 1, 1], axis=1).max() < 5e-3
