"""DCT's dense keypoint loss: DensePose points as 2D keypoints on the mesh surface.

Each annotated pixel lies on a known face of the full mesh at known barycentrics (`dp_face`,
`dp_bary`, precomputed from its I, U, V). Its predicted position is the same barycentric combination
of the projected corners, sum_k bary_k pi(V[vert_k]), and the loss is its L1 distance to the pixel,
mean over the two coordinates as the keypoint losses of `densehmr.losses.hmr`.

Normalized as DCT's trainer normalizes it: each sample's points are averaged first (its weights are
1 / (number of points) per sample), then the samples that have points, so a person annotated with 20
points pulls as hard as one with 200.
"""

from __future__ import annotations

from torch import Tensor

from densehmr.losses.hmr import per_sample_mean


def surface_points_2d(verts_2d: Tensor, faces: Tensor, face: Tensor, bary: Tensor) -> Tensor:
    """Image positions (B, P, 2) of surface points given by face (B, P) int64 and bary (B, P, 3),
    interpolated from projected vertices verts_2d (B, V, 2) of a mesh with faces (F, 3)."""
    b, p = face.shape
    corners = faces[face.reshape(-1)].view(b, p * 3)  # (B, 3P) vertex ids
    corner_xy = verts_2d.gather(1, corners[..., None].expand(b, p * 3, 2)).view(b, p, 3, 2)
    return (bary[..., None].to(corner_xy) * corner_xy).sum(-2)


def dense_keypoint_l1(
    verts_2d: Tensor,
    faces: Tensor,
    face: Tensor,
    bary: Tensor,
    xy: Tensor,
    valid: Tensor,
    scale: float = 1.0,
) -> Tensor:
    """(|x - x_hat| + |y - y_hat|) / 2 divided by `scale`, averaged over each sample's valid points and
    then over the samples that have any.

    verts_2d: (B, V, 2) projected vertices, crop px. faces: (F, 3) int64.
    face: (B, P) int64 and bary: (B, P, 3) each annotated point's face and barycentrics (anything
    where invalid; a negative face, a point that maps to no face, counts as invalid).
    xy: (B, P, 2) annotated pixels, crop px. valid: (B, P) bool; a sample without dense points has
    no valid point and so weight 0. scale: px per loss unit (e.g. half the crop, for HMR's [-1, 1]
    normalized coordinates). With no valid point at all the loss is an exact zero that stays in the
    graph.
    """
    keep = valid & (face >= 0)
    # Padding is zeroed before use, not masked after: non-finite padding would poison the gradient.
    safe_face = face.masked_fill(~keep, 0)
    safe_bary = bary.masked_fill(~keep[..., None], 0.0)
    safe_xy = xy.masked_fill(~keep[..., None], 0.0)
    pred = surface_points_2d(verts_2d, faces, safe_face, safe_bary)
    per_point = (pred - safe_xy.to(pred)).abs().mean(-1)  # exactly 0 on padding
    return per_sample_mean(per_point, keep) / scale
