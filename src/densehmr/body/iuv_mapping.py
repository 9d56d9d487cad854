"""DensePose (I, U, V) <-> surface point (face, barycentric) on a charted mesh, vectorized in torch.

Each part's chart gets a uniform grid over its UV extent. A grid cell lists the faces whose UV bounding
box overlaps it, and the chart-boundary edges that can be the closest to any point of the cell. A query
is tested against its cell's faces; if none contains it, it snaps to the closest point of the chart
(which then lies on a boundary edge). All lists are stored flat (CSR); queries are grouped by their
cell's list length and each group is padded to its own maximum. Chart UVs are expected in [-1, 1].
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from densehmr.body.assets import NUM_PARTS, Charts

# Barycentric slack for "inside": points on a shared edge belong to either face.
_INSIDE_EPS = 1e-5
# Queries per chunk; bounds memory at chunk x (candidates per cell).
_CHUNK = 1 << 16


def _csr(cell: Tensor, item: Tensor, num_cells: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flat item lists per cell: (start (C,), count (C,), items sorted by cell)."""
    order = torch.argsort(cell, stable=True)
    count = torch.bincount(cell, minlength=num_cells)
    start = torch.cumsum(count, 0) - count
    return start, count, item[order]


def _gather_padded(start: Tensor, count: Tensor, items: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
    """Candidates (N, K) of each query's cell, padded to the batch maximum K, and their validity mask."""
    cnt = count[cells]
    k = max(int(cnt.max()) if cnt.numel() else 0, 1)
    offs = torch.arange(k, device=cells.device)
    valid = offs[None, :] < cnt[:, None]
    idx = (start[cells][:, None] + offs[None, :]).clamp(max=max(items.numel() - 1, 0))
    if items.numel() == 0:
        return torch.zeros_like(idx), torch.zeros_like(valid)
    return items[idx], valid


def _buckets(count: Tensor) -> list[Tensor]:
    """Query indices grouped by candidate count in powers of two (count 0 left out).

    Padding each group to its own maximum keeps a few crowded cells from padding every query.
    """
    level = torch.ceil(torch.log2(count.clamp(min=1).double())).long()
    level = torch.where(count > 0, level, torch.full_like(level, -1))
    return [torch.nonzero(level == lv).squeeze(1) for lv in torch.unique(level).tolist() if lv >= 0]


def _point_segment(q: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Distance from points q (..., 2) to segments a-b (..., 2), and the clamped segment parameter t."""
    ab = b - a
    t = (((q - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-30)).clamp(0.0, 1.0)
    return (a + t[..., None] * ab - q).norm(dim=-1), t


class IUVMapper:
    """(part, U, V) <-> (face, barycentric) on one charted mesh.

    Built once from a `Charts`; queries are batched torch ops on the mapper's device (`.to(device)`).
    `faces_per_cell` sets each part's grid resolution (about that many faces per cell on average).
    """

    def __init__(self, charts: Charts, faces_per_cell: float = 0.25) -> None:
        face_uv = charts.face_uv.detach().double()
        face_part = charts.face_part.detach().long()
        dev = face_uv.device
        num_faces = face_uv.shape[0]
        self.face_part = face_part
        self.face_uv = face_uv.float()

        # Affine map of a UV point to the barycentrics (w1, w2) of each face, from float64.
        a = face_uv[:, 0]
        m = torch.stack([face_uv[:, 1] - a, face_uv[:, 2] - a], -1)  # (F, 2, 2) columns = edges
        det = torch.linalg.det(m)
        ok = det.abs() > 1e-18
        inv = torch.zeros_like(m)
        inv[ok] = torch.linalg.inv(m[ok])
        self._origin = a.float()
        self._inv = inv.float()
        self._degenerate = ~ok

        # Per-part grid: extent is the chart box joined with [0, 1]^2, resolution from the face count.
        faces_of_part = torch.bincount(face_part, minlength=NUM_PARTS + 1)[: NUM_PARTS + 1]
        lo = torch.zeros(NUM_PARTS + 1, 2, dtype=torch.float64, device=dev)
        hi = torch.ones(NUM_PARTS + 1, 2, dtype=torch.float64, device=dev)
        flat_uv = face_uv.reshape(-1, 2)
        corner_part = face_part.repeat_interleave(3)
        for c in range(2):
            lo[:, c] = lo[:, c].scatter_reduce(0, corner_part, flat_uv[:, c], "amin")
            hi[:, c] = hi[:, c].scatter_reduce(0, corner_part, flat_uv[:, c], "amax")
        res = torch.clamp(torch.ceil(torch.sqrt(faces_of_part.double() / faces_per_cell)), 1, 256).long()
        base = torch.cumsum(res * res, 0) - res * res
        num_cells = int((res * res).sum())
        self._lo, self._size = lo.float(), ((hi - lo) / res[:, None]).float()
        self._res, self._base = res, base

        # Faces per cell: every cell overlapped by the face's UV bounding box.
        p = face_part
        c0 = self._cell_coord(face_uv.min(1).values, p)
        c1 = self._cell_coord(face_uv.max(1).values, p)
        span = c1 - c0 + 1
        n_cells = span[:, 0] * span[:, 1]
        face_rep = torch.repeat_interleave(torch.arange(num_faces, device=dev), n_cells)
        local = torch.arange(int(n_cells.sum()), device=dev) - torch.repeat_interleave(
            torch.cumsum(n_cells, 0) - n_cells, n_cells
        )
        col = c0[face_rep, 0] + local % span[face_rep, 0]
        row = c0[face_rep, 1] + local // span[face_rep, 0]
        cell = base[p[face_rep]] + row * res[p[face_rep]] + col
        self._tri_start, self._tri_count, self._tri_items = _csr(cell, face_rep, num_cells)

        self._build_edge_lists(face_uv, face_part, num_cells)

    def _cell_coord(self, uv: Tensor, part: Tensor) -> Tensor:
        """Integer (col, row) (N, 2) of UV points in their part's grid, clamped to the grid."""
        res = self._res[part]
        rel = (uv.to(self._lo) - self._lo[part]) / self._size[part]
        return torch.minimum(rel.floor().long().clamp(min=0), (res - 1)[:, None])

    def _build_edge_lists(self, face_uv: Tensor, face_part: Tensor, num_cells: int) -> None:
        """Per cell, the chart-boundary edges that may hold the closest chart point to the cell's points."""
        dev = face_uv.device
        num_faces = face_uv.shape[0]
        ka = torch.tensor([0, 1, 2], device=dev)
        kb = torch.tensor([1, 2, 0], device=dev)
        ea, eb = face_uv[:, ka], face_uv[:, kb]  # (F, 3, 2)
        # Edges are matched by their quantized UV endpoints (and part): a chart's boundary edge is used once.
        qa = torch.round(ea * (1 << 20)).long()
        qb = torch.round(eb * (1 << 20)).long()
        part = face_part[:, None].expand(-1, 3)
        ka_key = (part << 42) + (qa[..., 0] << 21) + qa[..., 1]
        kb_key = (part << 42) + (qb[..., 0] << 21) + qb[..., 1]
        lo_key, hi_key = torch.minimum(ka_key, kb_key).reshape(-1), torch.maximum(ka_key, kb_key).reshape(-1)
        order = torch.argsort(hi_key, stable=True)
        order = order[torch.argsort(lo_key[order], stable=True)]
        same = (lo_key[order][1:] == lo_key[order][:-1]) & (hi_key[order][1:] == hi_key[order][:-1])
        shared = torch.zeros(lo_key.numel(), dtype=torch.bool, device=dev)
        shared[order[1:][same]] = True
        shared[order[:-1][same]] = True
        boundary = ~shared.reshape(num_faces, 3)
        bf, bk = torch.nonzero(boundary, as_tuple=True)
        self._edge_face, self._edge_ka, self._edge_kb = bf, ka[bk], kb[bk]
        self._edge_a, self._edge_b = ea[bf, bk].float(), eb[bf, bk].float()

        cells, items = [], []
        edge_part = face_part[bf]
        for p in range(1, NUM_PARTS + 1):
            sel = torch.nonzero(edge_part == p).squeeze(1)
            if sel.numel() == 0:
                continue
            r = int(self._res[p])
            ij = torch.stack(
                torch.meshgrid(torch.arange(r, device=dev), torch.arange(r, device=dev), indexing="xy"), -1
            ).reshape(-1, 2)
            size = self._size[p]
            centre = self._lo[p] + (ij.float() + 0.5) * size
            half_diag = 0.5 * float(size.norm())
            d, _ = _point_segment(centre[:, None], self._edge_a[sel][None], self._edge_b[sel][None])
            # Points of a cell are within half_diag of its centre: keep edges that can beat the best bound
            # (with slack for float32 rounding).
            bound = (d + half_diag).min(1, keepdim=True).values + 1e-5
            c, e = torch.nonzero(d - half_diag <= bound, as_tuple=True)
            cells.append(self._base[p] + ij[c, 1] * r + ij[c, 0])
            items.append(sel[e])
        cell = torch.cat(cells) if cells else torch.zeros(0, dtype=torch.long, device=dev)
        item = torch.cat(items) if items else torch.zeros(0, dtype=torch.long, device=dev)
        self._edge_start, self._edge_count, self._edge_items = _csr(cell, item, num_cells)

    def to(self, device: torch.device | str) -> IUVMapper:
        """A copy with every tensor on `device`."""
        out = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(out, name, value.to(device))
        return out

    @property
    def device(self) -> torch.device:
        return self.face_uv.device

    def to_iuv(self, face: Tensor, bary: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Part (N,) int64, U (N,), V (N,) of surface points given as face (N,) and barycentrics (N, 3)."""
        face = face.long()
        uv = (bary.to(self.face_uv)[..., None] * self.face_uv[face]).sum(-2)
        return self.face_part[face], uv[..., 0], uv[..., 1]

    def to_face_bary(self, part: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Face (N,) int64 and barycentrics (N, 3) float32 of DensePose points (part 1..24, U, V in [0, 1]).

        The face of that part whose UV triangle contains (U, V) (the one it is deepest inside if several
        do); otherwise the closest point of the part's chart. U, V are clamped to [0, 1] first. Parts
        without faces (and background, 0) give face -1 and zero barycentrics.
        """
        shape = part.shape
        part = part.reshape(-1).long().to(self.device)
        q = torch.stack([u.reshape(-1), v.reshape(-1)], -1).to(self.face_uv).clamp(0.0, 1.0)
        faces, barys = [], []
        for s in range(0, part.numel(), _CHUNK):
            f, b = self._query(part[s : s + _CHUNK], q[s : s + _CHUNK])
            faces.append(f)
            barys.append(b)
        if not faces:
            return torch.zeros(shape, dtype=torch.long, device=self.device), torch.zeros(
                (*shape, 3), device=self.device
            )
        return torch.cat(faces).reshape(shape), torch.cat(barys).reshape(*shape, 3)

    def _query(self, part: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        in_range = (part >= 1) & (part <= NUM_PARTS)
        p = torch.where(in_range, part, torch.zeros_like(part))
        cr = self._cell_coord(q, p)
        cell = self._base[p] + cr[:, 1] * self._res[p] + cr[:, 0]
        face = torch.full_like(part, -1)
        bary = torch.zeros(part.numel(), 3, device=q.device, dtype=q.dtype)
        for idx in _buckets(self._tri_count[cell] * in_range):
            face[idx], bary[idx] = self._locate(q[idx], cell[idx])
        outside = torch.nonzero((face < 0) & in_range).squeeze(1)
        for idx in _buckets(self._edge_count[cell[outside]]):
            sel = outside[idx]
            face[sel], bary[sel] = self._snap(q[sel], cell[sel])
        return face, bary

    def _locate(self, q: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        """(face, barycentrics) of the cell's face that contains q most deeply; face -1 if none does."""
        cand, valid = _gather_padded(self._tri_start, self._tri_count, self._tri_items, cell)
        valid &= ~self._degenerate[cand]
        w12 = torch.einsum("nkij,nkj->nki", self._inv[cand], q[:, None] - self._origin[cand])
        bary = torch.cat([1.0 - w12.sum(-1, keepdim=True), w12], -1)  # (N, K, 3)
        depth = torch.where(valid, bary.min(-1).values, torch.full_like(bary[..., 0], -torch.inf))
        best_depth, best = depth.max(1)
        rows = torch.arange(q.shape[0], device=q.device)
        out = bary[rows, best].clamp(min=0.0)
        out = out / out.sum(-1, keepdim=True).clamp(min=1e-12)
        inside = best_depth >= -_INSIDE_EPS
        face = torch.where(inside, cand[rows, best], torch.full_like(best, -1))
        return face, torch.where(inside[:, None], out, torch.zeros_like(out))

    def _snap(self, q: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        """Closest chart point: (face, barycentrics) on the nearest boundary edge; face -1 if no chart."""
        cand, valid = _gather_padded(self._edge_start, self._edge_count, self._edge_items, cell)
        d, t = _point_segment(q[:, None], self._edge_a[cand], self._edge_b[cand])
        d = torch.where(valid, d, torch.full_like(d, torch.inf))
        best_d, best = d.min(1)
        rows = torch.arange(q.shape[0], device=q.device)
        e = cand[rows, best]
        tb = t[rows, best]
        bary = torch.zeros(q.shape[0], 3, device=q.device, dtype=q.dtype)
        bary[rows, self._edge_ka[e]] = 1.0 - tb
        bary[rows, self._edge_kb[e]] = tb
        found = torch.isfinite(best_d)
        face = torch.where(found, self._edge_face[e], torch.full_like(e, -1))
        return face, torch.where(found[:, None], bary, torch.zeros_like(bary))
