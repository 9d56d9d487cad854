"""Soft (differentiable) silhouettes, SoftRas-style, batched, in torch (CPU and CUDA).

Each face f contributes, at pixel centre p (continuous pixel coordinates, see `cameras`),
    D_f(p) = sigmoid(delta * d(p, f)^2 / sigma),  delta = +1 inside the triangle, -1 outside,
with d the distance (px) from p to the triangle's edges, weighted by w_f(p), the vertex values
interpolated with clamped, renormalized barycentrics. The silhouette is
    A(p) = 1 - prod_f (1 - D_f(p) w_f(p)),
summed in log space. Depth plays no part. Faces farther than sqrt(ln(1 / tol) sigma) px from a
pixel, where D_f < tol, are culled through their dilated bounding boxes (`binning`), so memory is
O(pixels x nearby faces). Zero-area faces are skipped.

Geometry per edge k (from v_k to v_k+1, length L_k, unit direction u_k, inward unit normal n_k):
s_k = n_k . (p - v_k) is the signed distance to its line (>= 0 on the inner side of every edge
means inside), tau_k = u_k . (p - v_k) the position along it; the squared distance to the segment is
s_k^2 + (tau_k - clamp(tau_k, 0, L_k))^2, and s_k L_k / |2 area| is the barycentric of v_k+2.

The backward pass is analytic and recomputes the forward terms block by block (no autograd graph
over face-pixel pairs): the squared distance to a segment differentiates at its optimal parameter t as
d/d(start) = -2 (1 - t) o, d/d(end) = -2 t o, with o the offset from the closest point (envelope
theorem, also where t is clamped); barycentrics at a fixed p differentiate as
d(gamma_j)/d(v_i) = -gamma_i grad_p(gamma_j).

On CPU, large calls run each block's per-slot arithmetic through `torch.compile`, which fuses the
few dozen elementwise operations into one loop (about 5x faster than eager torch, whose every
operation streams a block through memory); small calls stay eager, where the one-off compilation
(tens of seconds, less with inductor's on-disk cache) would not pay off.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from densehmr.render.binning import FaceBlock, bbox_blocks, chunk_size

# D_f below this is treated as 0 (the face is culled at that pixel).
_CULL_TOL = 1e-4
# Calls with fewer face-pixel slots than this run eagerly (see the module docstring); MeshPose's
# rendering loss at the CPU default has about 2^17, the benchmark's 64 x 64 batch about 2^20.
COMPILE_MIN_SLOTS = 1 << 19


def _face_table(tri: Tensor, values: Tensor | None) -> Tensor:
    """Per-face constants (C, K), three rows (edges k = 0, 1, 2) per quantity:
    0 nx, 3 ny, 6 n . v_k, 9 ux, 12 uy, 15 u . v_k, 18 L, 21 1/L, 24 L / |2 area|,
    then 27 the value of v_k+2 (the vertex opposite edge k) when values are given."""
    start = tri.transpose(0, 1)  # (3, K, 2): v_k
    edge = tri.roll(-1, dims=1).transpose(0, 1) - start
    length = edge.norm(dim=-1)
    ux, uy = edge[..., 0] / length, edge[..., 1] / length
    area2 = edge[0, :, 0] * edge[1, :, 1] - edge[0, :, 1] * edge[1, :, 0]
    orient = torch.sign(area2)
    nx, ny = -uy * orient, ux * orient
    rows = [
        nx,
        ny,
        nx * start[..., 0] + ny * start[..., 1],
        ux,
        uy,
        ux * start[..., 0] + uy * start[..., 1],
        length,
        1.0 / length,
        length / area2.abs(),
    ]
    if values is not None:
        rows.append(values.roll(1, dims=1).t())  # row k: vertex k + 2
    return torch.cat(rows, dim=0)


@dataclass
class _BlockTerms:
    """Forward quantities of one block, (3, K, S) per edge or (K, S) per slot."""

    s: Tensor
    excess: Tensor
    clamped_tau: Tensor
    d2: Tensor
    inside: Tensor
    cover: Tensor
    weight: Tensor | None
    gamma: Tensor | None
    gamma_clamped: Tensor | None
    gamma_total: Tensor | None
    m: Tensor


def _block_terms(
    table: Tensor, col0: Tensor, row0: Tensor, slot_col: Tensor, slot_row: Tensor, mask: Tensor,
    inv_sigma: Tensor, has_values: bool,
) -> _BlockTerms:
    """Per-slot terms of a block (`FaceBlock`'s fields); table (C, K) already gathered for its faces,
    inv_sigma a 0-dim tensor (1 / sigma), so that compiled kernels serve every sigma."""
    dtype = table.dtype
    t = table[..., None]  # (C, K, 1), broadcast along the slots
    x0 = (col0.to(dtype) + 0.5)[:, None]
    y0 = (row0.to(dtype) + 0.5)[:, None]
    dc, dr = slot_col.to(dtype), slot_row.to(dtype)
    nx, ny, nv, ux, uy, uv = t[0:3], t[3:6], t[6:9], t[9:12], t[12:15], t[15:18]
    s = torch.addcmul(nx * x0 + ny * y0 - nv, nx, dc).addcmul_(ny, dr)
    tau = torch.addcmul(ux * x0 + uy * y0 - uv, ux, dc).addcmul_(uy, dr)
    clamped_tau = torch.minimum(tau.clamp(min=0.0), t[18:21])
    excess = tau - clamped_tau
    # Reductions over the 3 edges are written out: torch's reductions over a leading dim are slow.
    d2 = torch.addcmul(s * s, excess, excess)
    nearest = torch.minimum(torch.minimum(d2[0], d2[1]), d2[2])
    inside = (s[0] >= 0) & (s[1] >= 0) & (s[2] >= 0)
    cover = torch.sigmoid(torch.where(inside, nearest, -nearest) * inv_sigma) * mask
    weight = gamma = gamma_clamped = gamma_total = None
    m = cover
    if has_values:
        gamma = s * t[24:27]
        gamma_clamped = gamma.clamp(0.0, 1.0)
        gamma_total = gamma_clamped[0] + gamma_clamped[1] + gamma_clamped[2]
        weighted = gamma_clamped * t[27:30]
        weight = (weighted[0] + weighted[1] + weighted[2]) / gamma_total
        m = cover * weight
    return _BlockTerms(s, excess, clamped_tau, d2, inside, cover, weight, gamma, gamma_clamped, gamma_total, m)


def _top(dtype: torch.dtype) -> float:
    """Largest D w kept below 1, so that log(1 - D w) stays finite."""
    return 1.0 - 4 * torch.finfo(dtype).eps


def _block_log_empty(
    table: Tensor, col0: Tensor, row0: Tensor, slot_col: Tensor, slot_row: Tensor, mask: Tensor,
    inv_sigma: Tensor, has_values: bool,
) -> Tensor:
    """log(1 - D w) (K, S) of a block's slots (0 on masked slots); arguments as `_block_terms`."""
    m = _block_terms(table, col0, row0, slot_col, slot_row, mask, inv_sigma, has_values).m
    return torch.log1p(-m.clamp(max=_top(m.dtype)))


def _block_grads(
    table: Tensor, col0: Tensor, row0: Tensor, slot_col: Tensor, slot_row: Tensor, mask: Tensor,
    pixel: Tensor, grad_a: Tensor, inv_sigma: Tensor, has_values: bool, need_verts: bool, need_values: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of one block w.r.t. its faces' corners (K, 3, 2) and corner values (K, 3), each
    None when not needed; the forward terms are recomputed.

    pixel: (K, S) the block's pixel indices; grad_a: (N,) dL/dA (1 - A) of every pixel.
    Other arguments as `_block_terms`.
    """
    terms = _block_terms(table, col0, row0, slot_col, slot_row, mask, inv_sigma, has_values)
    grad_m = grad_a[pixel] * mask
    t = table[..., None]
    m, cover = terms.m, terms.cover
    gm = torch.where(m < _top(m.dtype), grad_m / (1.0 - m), 0.0)
    has_values = terms.weight is not None
    grad = grad_values = None
    if has_values:
        gw = gm * cover  # dL/dw
    if has_values and need_values:
        share = terms.gamma_clamped / terms.gamma_total
        grad_values = (gw * share).sum(-1).t().roll(-1, dims=1)  # row k belongs to vertex k + 2
    if not need_verts:
        return grad, grad_values

    # d2 path: dm/d(d2) = w D (1 - D) delta / sigma; the corner gradients carry the -2.
    q = gm * cover * (1.0 - cover) * (-2.0 * inv_sigma)
    if has_values:
        q = q * terms.weight
    q = torch.where(terms.inside, q, -q)
    d2 = terms.d2
    closest = torch.where(d2[2] < torch.minimum(d2[0], d2[1]), 2, (d2[1] < d2[0]).long())
    # q on the closest edge's row, 0 on the others (a comparison, which fuses where a scatter would not).
    on_edge = torch.where(closest == torch.arange(3, device=q.device)[:, None, None], q, 0.0)
    frac = terms.clamped_tau * t[21:24]  # t in [0, 1] along each edge
    qs, qe = on_edge * terms.s, on_edge * terms.excess
    qs_end, qe_end = (qs * frac).sum(-1), (qe * frac).sum(-1)
    qs_start, qe_start = qs.sum(-1) - qs_end, qe.sum(-1) - qe_end  # (3, K)
    n = table[0:6].view(2, 3, -1).permute(2, 1, 0)  # (K, 3, 2) inward normal of edge k
    u = table[9:15].view(2, 3, -1).permute(2, 1, 0)  # (K, 3, 2) direction of edge k
    start = qs_start.t()[..., None] * n + qe_start.t()[..., None] * u
    end = qs_end.t()[..., None] * n + qe_end.t()[..., None] * u
    grad = start + end.roll(1, dims=1)  # edge k ends at corner k + 1

    if has_values:
        free = (terms.gamma > 0) & (terms.gamma < 1)
        g_gamma = torch.where(free, (t[27:30] - terms.weight) * (gw / terms.gamma_total), 0.0)
        # grad_p gamma_k = (L_k / |2 area|) n_k; vertex k + 2 gets
        # -sum over slots of gamma_k grad_p(sum_j g_gamma_j gamma_j).
        moments = (terms.gamma[:, None] * g_gamma[None]).sum(-1).permute(2, 0, 1)  # (K, 3, 3): k, j
        slope = table[24:27].t()[..., None] * n  # (K, 3, 2): j
        grad = grad - (moments[..., None] * slope[:, None]).sum(2).roll(-1, dims=1)
    return grad, grad_values


class _CompiledKernel:
    """`fn` through torch.compile (dynamic shapes, so that one compilation serves every block); if
    compiling fails (e.g. no C++ compiler), one warning and `fn` itself from then on."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.compiled: Callable | None = None
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, dynamic=True)
                return self.compiled(*args)
            # Compilation depends on the machine's toolchain; the eager kernel computes the same.
            except Exception as err:  # noqa: BLE001
                self.failed = True
                warnings.warn(f"soft_silhouette: torch.compile failed ({type(err).__name__}: {err}".splitlines()[0]
                              + "), running eagerly", stacklevel=2)
        return self.fn(*args)


_COMPILED_LOG_EMPTY = _CompiledKernel(_block_log_empty)
_COMPILED_GRADS = _CompiledKernel(_block_grads)


def _kernel(fn: Callable, compiled: Callable, use_compiled: bool, block: FaceBlock) -> Callable:
    """The compiled kernel where asked for, except on blocks with one face or one slot: dynamic shapes
    specialize sizes 0 and 1, which would compile again for a block that costs nothing."""
    return compiled if use_compiled and min(block.mask.shape) > 1 else fn


class _SoftSilhouette(torch.autograd.Function):
    """A (N,) = 1 - prod over a pixel's faces of (1 - D w), N = B * H * W."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        tri: Tensor,
        values: Tensor | None,
        blocks: list[FaceBlock],
        num_pixels: int,
        sigma: float,
        use_compiled: bool,
    ) -> Tensor:
        table = _face_table(tri, values)
        inv_sigma = torch.tensor(1.0 / sigma, dtype=tri.dtype, device=tri.device)
        log_empty = torch.zeros(num_pixels, dtype=tri.dtype, device=tri.device)
        for block in blocks:
            kernel = _kernel(_block_log_empty, _COMPILED_LOG_EMPTY, use_compiled, block)
            log_m = kernel(
                table.index_select(1, block.face), block.col0, block.row0, block.slot_col, block.slot_row,
                block.mask, inv_sigma, values is not None,
            )
            log_empty.index_add_(0, block.pixel.flatten(), log_m.flatten())
        out = -torch.expm1(log_empty)
        ctx.save_for_backward(tri, values, out, inv_sigma)
        ctx.blocks, ctx.use_compiled = blocks, use_compiled
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        tri, values, out, inv_sigma = ctx.saved_tensors
        table = _face_table(tri, values)
        # dA/dm of one face's term is (1 - A) / (1 - m); the 1 / (1 - m) is per slot.
        grad_a = grad_out * (1.0 - out)
        need_verts, need_values = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_tri = torch.zeros_like(tri) if need_verts else None
        grad_values = torch.zeros_like(values) if need_values else None
        for block in ctx.blocks:
            kernel = _kernel(_block_grads, _COMPILED_GRADS, ctx.use_compiled, block)
            grad, grad_v = kernel(
                table.index_select(1, block.face), block.col0, block.row0, block.slot_col, block.slot_row,
                block.mask, block.pixel, grad_a, inv_sigma, values is not None, need_verts, need_values,
            )
            if grad is not None:
                grad_tri.index_add_(0, block.face, grad)
            if grad_v is not None:
                grad_values.index_add_(0, block.face, grad_v)
        return grad_tri, grad_values, None, None, None, None


def soft_silhouette(
    screen_verts: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    sigma: float = 1.0,
    vertex_values: Tensor | None = None,
    compiled: bool | None = None,
) -> Tensor:
    """Soft silhouette (B, H, W) in [0, 1], differentiable w.r.t. screen_verts and vertex_values.

    screen_verts:  (B, V, 2 or 3) pixel x, y (a depth column is ignored).
    faces:         (F, 3) int64.
    image_size:    (H, W).
    sigma:         sharpness in px^2: D = sigmoid(-1) ~ 0.27 at sqrt(sigma) px outside an edge.
    vertex_values: (B, V) per-vertex weights in [0, 1] (e.g. MeshPose's visibility); all ones if None.
    compiled:      run the per-slot arithmetic through torch.compile; None: on CPU when the call has at
                   least COMPILE_MIN_SLOTS face-pixel slots.
    """
    height, width = image_size
    batch, num_faces = screen_verts.shape[0], faces.shape[0]
    tri = screen_verts[..., :2][:, faces].reshape(batch * num_faces, 3, 2)
    values = None if vertex_values is None else vertex_values.to(tri)[:, faces].reshape(batch * num_faces, 3)

    reach = math.sqrt(math.log(1.0 / _CULL_TOL) * sigma)
    with torch.no_grad():
        corners = tri.detach().view(batch, num_faces, 3, 2)
        edge = corners.roll(-1, dims=2) - corners
        area2 = edge[..., 0, 0] * edge[..., 1, 1] - edge[..., 0, 1] * edge[..., 1, 0]
        valid = torch.isfinite(area2) & (area2 != 0)
        lo, hi = corners.amin(dim=2) - reach, corners.amax(dim=2) + reach
        blocks = list(bbox_blocks(lo, hi, valid, image_size, chunk_size(tri.device)))
    if compiled is None:
        slots = sum(block.mask.numel() for block in blocks)
        compiled = tri.device.type == "cpu" and slots >= COMPILE_MIN_SLOTS
    out = _SoftSilhouette.apply(tri, values, blocks, batch * height * width, sigma, compiled)
    return out.view(batch, height, width)
