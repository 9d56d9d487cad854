"""MeshPose's loss terms, each a small function of already-selected predictions and targets.

Distances in pixels are divided by a `scale` (the crop size), so every term is O(1) whatever the
crop. A term over an empty selection is an exact zero that stays in the graph.

Groups (MeshPose's ablation): L3D = vertex_l2 + edge_length + normal_cosine (+ joints);
L2D = barycentric_cross_entropy + uv_consistency; LW = visibility_bce + rendering_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from densehmr.render.rasterize import rasterize


def _zero(like: Tensor) -> Tensor:
    return like.sum() * 0.0


def barycentric_cross_entropy(log_q: Tensor, corners: Tensor, bary: Tensor) -> Tensor:
    """Cross-entropy -sum_k bary_k log q[corner_k], mean over points.

    log_q: (N, v) log-posterior over low-poly vertices at each annotated pixel.
    corners: (N, 3) int64 vertices of the annotation's low-poly face; bary: (N, 3) its barycentrics.
    Minimal (the entropy of bary) exactly when q equals bary on the corners and 0 elsewhere.
    """
    if log_q.shape[0] == 0:
        return _zero(log_q)
    return -(bary * log_q.gather(1, corners)).sum(-1).mean()


def uv_consistency(points: Tensor, corner_xy: Tensor, bary: Tensor, scale: float) -> Tensor:
    """Mean ||x - sum_k bary_k x_k|| / scale: an annotated pixel x (N, 2) against the predicted positions
    (N, 3, 2) of its face's vertices combined with its barycentrics (N, 3). Pixels."""
    if points.shape[0] == 0:
        return _zero(corner_xy)
    combined = (bary[..., None] * corner_xy).sum(-2)
    return (points - combined).norm(dim=-1).mean() / scale


def visibility_bce(logits: Tensor, labels: Tensor, known: Tensor) -> Tensor:
    """Binary cross-entropy of visibility logits (B, v) on the labelled vertices only (known (B, v) bool)."""
    if not known.any():
        return _zero(logits)
    return F.binary_cross_entropy_with_logits(logits[known], labels[known].to(logits.dtype))


def visibility_labels(
    face_corners: Tensor,
    point_valid: Tensor,
    verts_xy: Tensor,
    has_verts: Tensor,
    image_size: tuple[int, int],
    hidden: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """MeshPose's partial visibility labels (B, v) float and which are known (B, v) bool.

    Visible (1): the 3 vertices of every annotated pixel's low-poly face (face_corners (B, P, 3), valid
    where point_valid (B, P)). Not visible (0): vertices whose ground-truth position verts_xy (B, v, 2)
    crop px falls outside the crop and, when given, those `hidden` (B, v) bool behind the body's own surface
    (`self_occluded`), for samples with has_verts (B,) only. Annotation wins where both hold.
    """
    b, v = verts_xy.shape[:2]
    h, w = image_size
    x, y = verts_xy.unbind(-1)
    invisible = (x < 0) | (x >= w) | (y < 0) | (y >= h)
    if hidden is not None:
        invisible = invisible | hidden
    invisible = invisible & has_verts[:, None]
    idx = torch.where(point_valid[..., None], face_corners, torch.zeros_like(face_corners))
    hits = torch.zeros(b, v, device=verts_xy.device)
    votes = point_valid[..., None].expand_as(face_corners).reshape(b, -1).float()
    hits.scatter_add_(1, idx.reshape(b, -1), votes)
    seen = hits > 0
    return seen.to(verts_xy.dtype), seen | invisible


def self_occluded(screen: Tensor, faces: Tensor, image_size: tuple[int, int], margin: float) -> Tensor:
    """(B, v) bool: vertices hidden behind the mesh's own surface, seen from the camera.

    screen: (B, v, 3) x, y crop px and camera depth (> 0, metres) of a mesh with faces (F, 3). A vertex is
    hidden when the surface visible at its pixel (z-buffered, perspective-correct) lies more than `margin`
    metres in front of it; a vertex outside the crop is not (it is labelled by its position).
    """
    h, w = image_size
    zbuf = rasterize(screen, faces, image_size, perspective_correct=True).zbuf  # (B, H, W), inf: background
    col, row = screen[..., 0].floor().long(), screen[..., 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    surface = zbuf.flatten(1).gather(1, flat)
    return inside & (screen[..., 2] > surface + margin)


def squared_distance_to(target: Tensor) -> Tensor:
    """Exact squared Euclidean distance (B, H, W) px^2 from each pixel to the nearest True pixel of
    target (B, H, W) bool (a large value where target is empty), by two separable min-plus passes."""
    b, h, w = target.shape
    big = float(h * h + w * w)
    f = torch.where(target, 0.0, big).to(torch.float32)
    cols = torch.arange(w, device=target.device, dtype=torch.float32)
    rows = torch.arange(h, device=target.device, dtype=torch.float32)
    along_w = ((cols[:, None] - cols[None, :]) ** 2)  # (W out, W in)
    g = (f[:, :, None, :] + along_w).amin(-1)  # (B, H, W)
    along_h = ((rows[:, None] - rows[None, :]) ** 2)  # (H out, H in)
    return (g.transpose(1, 2)[:, :, None, :] + along_h).amin(-1).transpose(1, 2).clamp(max=big)


def signed_distance(mask: Tensor) -> Tensor:
    """Signed distance (B, H, W) px to the boundary of mask (B, H, W) bool: negative inside, positive
    outside (Kervadec et al.'s level set)."""
    outside = squared_distance_to(mask).sqrt()
    inside = squared_distance_to(~mask).sqrt()
    return torch.where(mask, -inside, outside)


def rendering_loss(silhouette: Tensor, mask: Tensor, boundary_weight: float = 1.0) -> Tensor:
    """l2 + boundary loss of a soft silhouette (B, h, w) against the person mask (B, h, w), both in [0, 1].

    Boundary term: mean over pixels of (A - M) phi / diag, phi the signed distance to the mask's boundary
    (Kervadec et al., 2019) shifted by its value at A = M, so it is >= 0 and 0 exactly at the mask.
    """
    if silhouette.shape[0] == 0:
        return _zero(silhouette)
    l2 = ((silhouette - mask) ** 2).mean()
    with torch.no_grad():
        h, w = mask.shape[-2:]
        phi = signed_distance(mask > 0.5) / float((h * h + w * w) ** 0.5)
    boundary = ((silhouette - (mask > 0.5).to(silhouette.dtype)) * phi).mean()
    return l2 + boundary_weight * boundary


def vertex_l2(pred: Tensor, target: Tensor, scale: float) -> Tensor:
    """Mean Euclidean distance / scale between vertices (B, v, D) and their targets."""
    if pred.shape[0] == 0:
        return _zero(pred)
    return (pred - target).norm(dim=-1).mean() / scale


def edge_length(pred: Tensor, target: Tensor, edges: Tensor, scale: float) -> Tensor:
    """Mean |l_pred - l_target| / scale over mesh edges (E, 2) of vertices (B, v, 3)."""
    if pred.shape[0] == 0:
        return _zero(pred)
    lp = (pred[:, edges[:, 0]] - pred[:, edges[:, 1]]).norm(dim=-1)
    lt = (target[:, edges[:, 0]] - target[:, edges[:, 1]]).norm(dim=-1)
    return (lp - lt).abs().mean() / scale


def face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Unit normals (B, F, 3) of faces (F, 3) of vertices (B, v, 3) (zero for degenerate faces)."""
    tri = verts[:, faces]
    n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    return F.normalize(n, dim=-1, eps=1e-8)


def normal_cosine(pred: Tensor, target: Tensor, faces: Tensor) -> Tensor:
    """Mean 1 - cos between predicted and target face normals, vertices (B, v, 3), faces (F, 3)."""
    if pred.shape[0] == 0:
        return _zero(pred)
    return (1.0 - (face_normals(pred, faces) * face_normals(target, faces)).sum(-1)).mean()


def joint_distance(pred: Tensor, target: Tensor, weight: Tensor, scale: float) -> Tensor:
    """Weighted mean Euclidean distance / scale between joints (B, J, D) and targets, weight (B, J) >= 0."""
    total = weight.sum()
    if total <= 0:
        return _zero(pred)
    return ((pred - target).norm(dim=-1) * weight).sum() / total / scale


def mesh_edges(faces: Tensor) -> Tensor:
    """Unique undirected edges (E, 2) int64 of triangles (F, 3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return torch.unique(torch.sort(e, dim=1).values, dim=0)
