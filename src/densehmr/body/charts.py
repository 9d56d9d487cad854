"""DensePose-style charts: a flat, fold-free (U, V) layout of each body part, and the UV flip table.

DensePose obtained its charts by multidimensional scaling of geodesic distances, which folds curved
parts onto themselves. Here each part is cut to a disk if needed, embedded without folds by Tutte's
method (mean-value weights, boundary on a circle), then relaxed towards an isometry by SLIM
(Rabinovich et al. 2017: symmetric Dirichlet energy, local-global steps with a line search that never
lets a triangle invert). The boundary is free; if the freed boundary overlaps itself by more than a
sliver, the part is relaxed again with its boundary kept on the circle, which guarantees a one-to-one
chart (at a higher distortion).

Chart conventions (all parts): faces wound counter-clockwise seen from outside have counter-clockwise
(positive signed area) UV triangles; V runs along the part's longest 3D extent, pointing away from the
mesh centroid (limbs: proximal to distal; torso and head: upwards); U and V are each scaled to span
exactly [0, 1] (aspect ratio not kept, so every chart fills the unit square's extent).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.ndimage import distance_transform_edt
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.sparse.linalg import spsolve

from densehmr.body.assets import NUM_PARTS, PART_MIRROR, Charts
from densehmr.body.iuv_mapping import IUVMapper

_NEXT = np.array([1, 2, 0])
_PREV = np.array([2, 0, 1])
# A freed boundary may fold over itself along narrow slits of a part; a layout whose doubly covered
# area stays below this fraction is kept (measured on the open body: at most 3e-4), else the part
# is laid out again with its boundary held on the circle.
_MAX_OVERLAP = 1e-3


def build_charts(
    verts: np.ndarray,
    faces: np.ndarray,
    face_part: np.ndarray,
    mirror: np.ndarray | None = None,
    iterations: int = 40,
) -> np.ndarray:
    """Per-corner chart coordinates (F, 3, 2) float32, (U, V) in [0, 1], of every face in its part's chart.

    verts (V, 3) metres, faces (F, 3) consistently wound, face_part (F,) in 1..24; each part must be one
    edge-connected piece of genus 0 with at least one boundary loop. With `mirror` (V,) (left/right
    vertex map), a part whose PART_MIRROR counterpart has a lower id gets that chart reflected in U
    (so mirrored points share V and have U -> 1 - U), when every one of its faces has a mirror face there.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    face_part = np.asarray(face_part, dtype=np.int64)
    face_uv = np.zeros((len(faces), 3, 2))
    mesh_centre = verts[np.unique(faces)].mean(0)
    mface, corner = mirror_faces(faces, mirror) if mirror is not None else (None, None)
    for p in np.unique(face_part):
        sel = np.flatnonzero(face_part == p)
        q = PART_MIRROR[p] if 0 < p <= NUM_PARTS else p
        if mface is not None and q < p:
            src = mface[sel]
            if (src >= 0).all() and (face_part[src] == q).all():
                flipped = face_uv[src[:, None], corner[sel]]
                flipped[..., 0] = 1.0 - flipped[..., 0]
                face_uv[sel] = flipped
                continue
        try:
            face_uv[sel] = _part_chart(verts, faces[sel], mesh_centre, iterations)
        except ValueError as err:
            raise ValueError(f"part {p}: {err}") from err
    return face_uv.astype(np.float32)


def flipped_fraction(face_uv: np.ndarray, face_part: np.ndarray) -> float:
    """Fraction of faces whose UV orientation is not their part's majority (zero area counts as wrong)."""
    face_uv = np.asarray(face_uv, dtype=np.float64)
    face_part = np.asarray(face_part)
    sign = np.sign(_signed_area(face_uv))
    bad = 0
    for p in np.unique(face_part):
        s = sign[face_part == p]
        majority = 1.0 if (s > 0).sum() >= (s < 0).sum() else -1.0
        bad += int((s != majority).sum())
    return bad / max(len(face_part), 1)


def mirror_faces(faces: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mirror face of each face and how its corners correspond.

    Returns mface (F,) int64, the face whose vertices are mirror[faces[f]] (-1 if there is none), and
    corner (F, 3) int64: corner k of f lands on corner corner[f, k] of mface[f].
    """
    faces = np.asarray(faces, dtype=np.int64)
    mirror = np.asarray(mirror, dtype=np.int64)
    n = int(max(faces.max(), mirror.max())) + 1
    mirrored = mirror[faces]

    def key(tri: np.ndarray) -> np.ndarray:
        s = np.sort(tri, axis=1)
        return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]

    fkey = key(faces)
    order = np.argsort(fkey, kind="stable")
    sorted_key = fkey[order]
    mkey = key(mirrored)
    pos = np.clip(np.searchsorted(sorted_key, mkey), 0, len(faces) - 1)
    mface = np.where(sorted_key[pos] == mkey, order[pos], -1)
    target = faces[np.maximum(mface, 0)]
    corner = (target[:, None, :] == mirrored[:, :, None]).argmax(-1)
    return mface, corner


def build_uv_symmetry(
    faces: np.ndarray, face_part: np.ndarray, face_uv: np.ndarray, mirror: np.ndarray, size: int = 256
) -> np.ndarray:
    """DensePose UV flip table (24, size, size, 2) float32.

    Entry [p-1, row, col] is the (U, V), in part PART_MIRROR[p]'s chart, of the mirror image of the
    surface point at U = col / (size-1), V = row / (size-1) of part p (cells off the chart take the
    closest chart point). The mirror point follows the mirror face (lookup by vertex triple, weights kept
    on their vertices); where the mirrored triple is not a face of the mirror part, the mirrored vertices'
    UVs in that part are interpolated; cells still unresolved copy the nearest resolved cell, and parts
    without faces map to themselves.
    """
    faces = np.asarray(faces, dtype=np.int64)
    face_part = np.asarray(face_part, dtype=np.int64)
    face_uv = np.asarray(face_uv, dtype=np.float64)
    mirror = np.asarray(mirror, dtype=np.int64)
    mapper = IUVMapper(
        Charts(
            torch.as_tensor(faces), torch.as_tensor(face_part), torch.as_tensor(face_uv, dtype=torch.float32)
        )
    )
    grid = np.arange(size) / (size - 1)
    uu, vv = np.meshgrid(grid, grid, indexing="xy")  # [row, col] = (V, U)
    cells = size * size
    part = np.repeat(np.arange(1, NUM_PARTS + 1), cells)
    face_t, bary_t = mapper.to_face_bary(
        torch.as_tensor(part),
        torch.as_tensor(np.tile(uu.ravel(), NUM_PARTS)),
        torch.as_tensor(np.tile(vv.ravel(), NUM_PARTS)),
    )
    face, bary = face_t.numpy(), bary_t.double().numpy()
    target_part = np.asarray(PART_MIRROR)[part]
    out = np.full((len(part), 2), np.nan)

    mface, corner = mirror_faces(faces, mirror)
    has_face = face >= 0
    g = np.where(has_face, mface[np.maximum(face, 0)], -1)
    exact = has_face & (g >= 0) & (face_part[np.maximum(g, 0)] == target_part)
    idx = np.flatnonzero(exact)
    gb = np.zeros((len(idx), 3))
    np.put_along_axis(gb, corner[face[idx]], bary[idx], axis=1)
    out[idx] = (gb[:, :, None] * face_uv[g[idx]]).sum(1)

    # Fallback: interpolate the mirrored vertices' own UVs in the target part.
    idx = np.flatnonzero(has_face & ~exact)
    if len(idx):
        num_v = int(max(faces.max(), mirror.max())) + 1
        vert_uv = np.zeros((NUM_PARTS + 1, num_v, 2))
        vert_in = np.zeros((NUM_PARTS + 1, num_v), dtype=bool)
        vert_uv[face_part[:, None], faces] = face_uv
        vert_in[face_part[:, None], faces] = True
        mv = mirror[faces[face[idx]]]
        tp = target_part[idx][:, None]
        w = bary[idx] * vert_in[tp, mv]
        ok = w.sum(1) > 1e-9
        uv = (w[:, :, None] * vert_uv[tp, mv]).sum(1) / np.maximum(w.sum(1), 1e-9)[:, None]
        out[idx[ok]] = uv[ok]

    table = out.reshape(NUM_PARTS, size, size, 2)
    identity = np.stack([uu, vv], -1)
    for p in range(NUM_PARTS):
        missing = np.isnan(table[p, ..., 0])
        if missing.all():
            table[p] = identity
        elif missing.any():
            _, (ri, ci) = distance_transform_edt(missing, return_indices=True)
            table[p] = table[p][ri, ci]
    return table.astype(np.float32)


def _signed_area(face_uv: np.ndarray) -> np.ndarray:
    e1 = face_uv[:, 1] - face_uv[:, 0]
    e2 = face_uv[:, 2] - face_uv[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _part_chart(verts: np.ndarray, faces: np.ndarray, mesh_centre: np.ndarray, iterations: int) -> np.ndarray:
    """Corner UVs (f, 3, 2) of one part's faces (f, 3) (global vertex ids)."""
    ids, tri = np.unique(faces, return_inverse=True)
    tri = tri.reshape(-1, 3)
    xyz = verts[ids]
    cut = np.zeros(0, dtype=np.int64)
    for _ in range(64):
        split, orig = _split_corners(tri, cut)
        x = xyz[orig]
        n_comp, _ = connected_components(_vertex_graph(split, len(orig)), directed=False)
        if n_comp > 1:
            raise ValueError(f"{n_comp} disconnected pieces (relabel islands first)")
        loops = _boundary_loops(split)
        n_edges = len(_unique_edges(split, len(orig)))
        euler = len(orig) - n_edges + len(split)
        if len(loops) == 1 and euler == 1:
            break
        if not loops or euler != 2 - len(loops):
            raise ValueError(f"not a genus-0 surface with boundary ({len(loops)} loops, Euler {euler})")
        path = orig[_shortest_cut(split, x, loops)]
        a, b = np.minimum(path[:-1], path[1:]), np.maximum(path[:-1], path[1:])
        cut = np.union1d(cut, a * len(ids) + b)
    else:
        raise ValueError("could not cut to a disk")

    uv0 = _tutte(split, x, loops[0])
    uv = _slim(split, x, uv0, np.array([loops[0][0]]), iterations)
    if _polygon_self_intersects(uv[loops[0]]) and _overlap_fraction(uv, split) > _MAX_OVERLAP:
        uv = _slim(split, x, uv0, loops[0], iterations)
    uv = _orient(uv, x, mesh_centre)
    return uv[split]


def _split_corners(tri: np.ndarray, cut_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give each fan of faces around a vertex its own vertex copy.

    Two faces share a vertex copy when they share an edge through it that is used by exactly two faces
    and is not in `cut_keys` (a * n + b, a < b). Returns faces (f, 3) in the new vertices and the
    original vertex (n',) of each new one. Raises if two faces traverse a shared edge the same way.
    """
    f = len(tri)
    n = int(tri.max()) + 1
    he = np.arange(3 * f)
    he_b = 3 * (he // 3) + _NEXT[he % 3]
    va, vb = tri.reshape(-1), tri.reshape(-1)[he_b]
    key = np.minimum(va, vb) * n + np.maximum(va, vb)
    order = np.argsort(key, kind="stable")
    uniq, start, counts = np.unique(key[order], return_index=True, return_counts=True)
    pair = (counts == 2) & ~np.isin(uniq, cut_keys)
    h1, h2 = order[start[pair]], order[start[pair] + 1]
    if np.any(va[h1] == va[h2]):
        raise ValueError("faces are not consistently oriented")
    rows = np.concatenate([he[h1], he_b[h1]])
    cols = np.concatenate([he_b[h2], he[h2]])
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * f, 3 * f))
    _, label = connected_components(graph, directed=False)
    orig = np.zeros(label.max() + 1, dtype=np.int64)
    orig[label] = va
    return label.reshape(f, 3), orig


def _unique_edges(tri: np.ndarray, n: int) -> np.ndarray:
    e = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    return np.unique(e[:, 0] * n + e[:, 1])


def _vertex_graph(tri: np.ndarray, n: int, positions: np.ndarray | None = None) -> sp.csr_matrix:
    """Edge graph (n, n): unit weights, or edge lengths when vertex positions are given."""
    key = _unique_edges(tri, n)
    a, b = key // n, key % n
    w = np.ones(len(key)) if positions is None else np.linalg.norm(positions[a] - positions[b], axis=1)
    return sp.coo_matrix((w, (a, b)), shape=(n, n)).tocsr()


def _boundary_loops(tri: np.ndarray) -> list[np.ndarray]:
    """Boundary loops, each ordered with the surface on its left (counter-clockwise for a disk)."""
    n = int(tri.max()) + 1
    a = tri.reshape(-1)
    b = tri[:, _NEXT].reshape(-1)
    key = np.minimum(a, b) * n + np.maximum(a, b)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    on = counts[inverse] == 1
    nxt = np.full(n, -1)
    if len(np.unique(a[on])) != int(on.sum()):
        raise ValueError("non-manifold boundary")
    nxt[a[on]] = b[on]
    seen = np.zeros(n, dtype=bool)
    loops = []
    for s in a[on]:
        if seen[s]:
            continue
        loop = [s]
        seen[s] = True
        v = nxt[s]
        while v != s:
            if v < 0 or seen[v]:
                raise ValueError("open boundary chain")
            loop.append(v)
            seen[v] = True
            v = nxt[v]
        loops.append(np.asarray(loop))
    loops.sort(key=len, reverse=True)
    return loops


def _shortest_cut(tri: np.ndarray, x: np.ndarray, loops: list[np.ndarray]) -> np.ndarray:
    """Vertex path (along edges) from the first boundary loop to the nearest vertex of another loop."""
    graph = _vertex_graph(tri, len(x), x)
    dist, pred, _ = dijkstra(graph, directed=False, indices=loops[0], min_only=True, return_predecessors=True)
    others = np.concatenate(loops[1:])
    v = int(others[np.argmin(dist[others])])
    path = [v]
    while pred[v] >= 0:
        v = int(pred[v])
        path.append(v)
    return np.asarray(path)


def _corner_angles(tri: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angle at each corner (f, 3) and the lengths of the edges to the next / previous corner (f, 3)."""
    p = x[tri]
    to_next = p[:, _NEXT] - p
    to_prev = p[:, _PREV] - p
    cross = np.linalg.norm(np.cross(to_next, to_prev), axis=-1)
    dot = (to_next * to_prev).sum(-1)
    return np.arctan2(cross, dot), np.linalg.norm(to_next, axis=-1), np.linalg.norm(to_prev, axis=-1)


def _tutte(tri: np.ndarray, x: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """Fold-free embedding (n, 2): mean-value weights, boundary on a circle by arc length, 3D area."""
    n = len(x)
    angle, l_next, l_prev = _corner_angles(tri, x)
    half_tan = np.tan(0.5 * angle)
    rows = np.concatenate([tri.reshape(-1), tri.reshape(-1)])
    cols = np.concatenate([tri[:, _NEXT].reshape(-1), tri[:, _PREV].reshape(-1)])
    vals = np.concatenate(
        [(half_tan / np.maximum(l_next, 1e-12)).ravel(), (half_tan / np.maximum(l_prev, 1e-12)).ravel()]
    )
    w = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    lap = (sp.diags(np.asarray(w.sum(1)).ravel()) - w).tocsr()

    seg = np.linalg.norm(x[np.roll(loop, -1)] - x[loop], axis=1)
    theta = 2 * np.pi * np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    uv = np.zeros((n, 2))
    uv[loop] = np.stack([np.cos(theta), np.sin(theta)], 1)
    inner = np.setdiff1d(np.arange(n), loop)
    if len(inner):
        rhs = -lap[inner][:, loop] @ uv[loop]
        uv[inner] = spsolve(lap[inner][:, inner].tocsc(), rhs).reshape(len(inner), 2)
    area3 = (
        0.5 * np.linalg.norm(np.cross(x[tri[:, 1]] - x[tri[:, 0]], x[tri[:, 2]] - x[tri[:, 0]]), axis=1).sum()
    )
    area2 = _signed_area(uv[tri]).sum()
    return uv * np.sqrt(area3 / area2)


class _Distortion:
    """Symmetric Dirichlet energy of a UV layout of 3D triangles, and its SLIM proxy system."""

    def __init__(self, tri: np.ndarray, x: np.ndarray) -> None:
        e1 = x[tri[:, 1]] - x[tri[:, 0]]
        e2 = x[tri[:, 2]] - x[tri[:, 0]]
        l1 = np.maximum(np.linalg.norm(e1, axis=1), 1e-12)
        normal = np.cross(e1, e2)
        twice_area = np.maximum(np.linalg.norm(normal, axis=1), 1e-16)
        rest = np.zeros((len(tri), 2, 2))  # columns: the two edges in a local 2D frame
        rest[:, 0, 0] = l1
        rest[:, 0, 1] = (e1 * e2).sum(1) / l1
        rest[:, 1, 1] = twice_area / l1
        # J = P^T D for corner positions P (f, 3, 2).
        self.d = np.einsum(
            "kc,fcj->fkj", np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]]), np.linalg.inv(rest)
        )
        self.tri = tri
        self.area = 0.5 * twice_area / (0.5 * twice_area).sum()
        self.n = len(x)

    def jacobian(self, uv: np.ndarray) -> np.ndarray:
        return np.einsum("fkr,fkc->frc", uv[self.tri], self.d)

    def energy(self, uv: np.ndarray) -> float:
        j = self.jacobian(uv)
        det = np.linalg.det(j)
        if np.any(det <= 0):
            return np.inf
        return float((self.area * (j**2).sum((1, 2)) * (1.0 + 1.0 / det**2)).sum())

    def proxy_system(self, uv: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """Normal equations (2n, 2n), (2n,) of the reweighted ARAP proxy (unknowns: all U, then all V)."""
        u_, s, rot = _svd2(self.jacobian(uv))
        # Symmetric Dirichlet f(s) = s^2 + s^-2: weight sqrt(f'(s) / (2 (s - 1))) in closed form.
        w_s = np.sqrt((s + 1.0) * (s * s + 1.0) / s**3)
        w = np.einsum("fik,fk,fjk->fij", u_, w_s, u_)
        sa = np.sqrt(self.area)
        f = len(self.tri)
        # Residual rows (face, i, c): sum_k (W[i,0] D[k,c] u_k + W[i,1] D[k,c] v_k) - (W R)[i,c].
        coef = (
            sa[:, None, None, None, None]
            * w[:, :, None, :, None]
            * self.d.transpose(0, 2, 1)[:, None, :, None, :]
        )
        # coef[f, i, c, r, k] multiplies coordinate r of corner k.
        rows = np.broadcast_to(np.arange(4 * f).reshape(f, 2, 2, 1, 1), coef.shape)
        cols = np.broadcast_to(
            self.tri[:, None, None, None, :] + self.n * np.arange(2)[None, None, None, :, None], coef.shape
        )
        m = sp.coo_matrix((coef.ravel(), (rows.ravel(), cols.ravel())), shape=(4 * f, 2 * self.n)).tocsr()
        b = (sa[:, None, None] * (w @ rot)).reshape(-1)
        return (m.T @ m).tocsr(), m.T @ b


def _rotation(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _svd2(j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form SVD of 2x2 matrices (f, 2, 2) with positive determinant.

    Returns the left rotation U (f, 2, 2), singular values (f, 2) and the closest rotation U V^T.
    """
    e = 0.5 * (j[:, 0, 0] + j[:, 1, 1])
    f = 0.5 * (j[:, 0, 0] - j[:, 1, 1])
    g = 0.5 * (j[:, 1, 0] + j[:, 0, 1])
    h = 0.5 * (j[:, 1, 0] - j[:, 0, 1])
    q, r = np.hypot(e, h), np.hypot(f, g)
    a1, a2 = np.arctan2(g, f), np.arctan2(h, e)
    return _rotation(0.5 * (a2 + a1)), np.stack([q + r, q - r], -1), _rotation(a2)


def _max_step(tri: np.ndarray, uv: np.ndarray, step: np.ndarray) -> float:
    """Largest t in (0, 1] before any triangle of uv + t * step degenerates (times 0.8)."""
    p, d = uv[tri], step[tri]
    a, b = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    da, db = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    c0 = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    c1 = a[:, 0] * db[:, 1] + da[:, 0] * b[:, 1] - a[:, 1] * db[:, 0] - da[:, 1] * b[:, 0]
    c2 = da[:, 0] * db[:, 1] - da[:, 1] * db[:, 0]
    lin = np.abs(c2) < 1e-14 * np.maximum(np.abs(c1), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_lin = np.where(c1 < 0, -c0 / c1, np.inf)
        disc = c1 * c1 - 4 * c2 * c0
        sq = np.sqrt(np.maximum(disc, 0.0))
        r1 = (-c1 - sq) / (2 * c2)
        r2 = (-c1 + sq) / (2 * c2)
    r1 = np.where((disc >= 0) & (r1 > 0), r1, np.inf)
    r2 = np.where((disc >= 0) & (r2 > 0), r2, np.inf)
    roots = np.where(lin, r_lin, np.minimum(r1, r2))
    return float(min(1.0, 0.8 * roots.min()))


def _slim(tri: np.ndarray, x: np.ndarray, uv0: np.ndarray, fixed: np.ndarray, iterations: int) -> np.ndarray:
    """Relax a fold-free layout towards an isometry; `fixed` vertices stay put. Stays fold-free."""
    model = _Distortion(tri, x)
    n = len(x)
    fixed_dof = np.concatenate([fixed, fixed + n])
    free = np.setdiff1d(np.arange(2 * n), fixed_dof)
    uv = uv0.copy()
    energy = model.energy(uv)
    for _ in range(iterations):
        h, g = model.proxy_system(uv)
        flat = uv.T.reshape(-1)
        rhs = g[free] - h[free][:, fixed_dof] @ flat[fixed_dof]
        target = flat.copy()
        target[free] = spsolve(h[free][:, free].tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")
        step = target.reshape(2, n).T - uv
        t = _max_step(tri, uv, step)
        while t > 1e-10:
            trial = uv + t * step
            e = model.energy(trial)
            if e < energy:
                break
            t *= 0.5
        else:
            break
        done = energy - e < 1e-6 * energy
        uv, energy = trial, e
        if done:
            break
    return uv


def _polygon_self_intersects(poly: np.ndarray) -> bool:
    """Whether a closed polygon (B, 2) has two non-adjacent edges that properly cross."""
    a, b = poly, np.roll(poly, -1, axis=0)
    m = len(poly)
    i, j = np.triu_indices(m, 2)
    keep = ~((i == 0) & (j == m - 1))
    i, j = i[keep], j[keep]

    def orient(p, q, r):
        return (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])

    for s in range(0, len(i), 1 << 20):
        ii, jj = i[s : s + (1 << 20)], j[s : s + (1 << 20)]
        o1 = orient(a[ii], b[ii], a[jj])
        o2 = orient(a[ii], b[ii], b[jj])
        o3 = orient(a[jj], b[jj], a[ii])
        o4 = orient(a[jj], b[jj], b[ii])
        if np.any((o1 * o2 < 0) & (o3 * o4 < 0)):
            return True
    return False


def _overlap_fraction(uv: np.ndarray, tri: np.ndarray, resolution: int = 512) -> float:
    """Fraction of a layout's covered area that is covered more than once, by rasterizing its triangles."""
    lo = uv.min(0)
    px = (uv - lo) * ((resolution - 1) / max(float((uv.max(0) - lo).max()), 1e-300))
    corners = px[tri]  # (f, 3, 2)
    start = np.ceil(corners.min(1)).astype(np.int64)
    span = np.maximum(np.floor(corners.max(1)).astype(np.int64) - start + 1, 0)
    count = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(tri)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    pixel = start[face] + np.stack(
        [local % np.maximum(span[face, 0], 1), local // np.maximum(span[face, 0], 1)], 1
    )
    a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]

    def side(o, q):
        return (q[:, 0] - o[:, 0]) * (pixel[:, 1] - o[:, 1]) - (q[:, 1] - o[:, 1]) * (pixel[:, 0] - o[:, 0])

    inside = (side(a, b) > 0) & (side(b, c) > 0) & (side(c, a) > 0)
    hits = np.bincount(pixel[inside, 1] * resolution + pixel[inside, 0], minlength=resolution * resolution)
    return float((hits > 1).sum() / max((hits > 0).sum(), 1))


def _orient(uv: np.ndarray, x: np.ndarray, mesh_centre: np.ndarray) -> np.ndarray:
    """Rotate so +V follows the part's main 3D axis (away from the mesh centre), then scale to [0, 1]^2."""
    xc = x - x.mean(0)
    _, _, axes = np.linalg.svd(xc, full_matrices=False)
    axis = axes[0]
    side = axis @ (x.mean(0) - mesh_centre)
    if abs(side) > 1e-9 * max(np.abs(xc).max(), 1e-12):
        axis = axis * np.sign(side)
    else:
        axis = axis * np.sign(axis[np.argmax(np.abs(axis))])
    uvc = uv - uv.mean(0)
    lin = np.linalg.lstsq(uvc, xc, rcond=None)[0]  # (2, 3): uv -> xyz
    g = np.linalg.lstsq(lin.T, axis, rcond=None)[0]
    phi = np.pi / 2 - np.arctan2(g[1], g[0])
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    out = uvc @ rot.T
    lo, hi = out.min(0), out.max(0)
    return (out - lo) / np.maximum(hi - lo, 1e-12)
