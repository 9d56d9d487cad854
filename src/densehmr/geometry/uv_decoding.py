"""DensePose (I, U, V) from VertexPose's per-pixel posterior over the low-poly mesh's vertices.

At a pixel, q (v,) = softmax over the vertex channels of the heatmap logits. Three decodings
(MeshPose, Sec. "UV decoding"; the paper measures barycentric > closest >> global average):
- barycentric: the face f* whose vertices hold the most posterior mass, sum_k q[f*_k]; the pixel is
  the point of f* with barycentrics q[f*_k] renormalized, its (U, V) those weights on f*'s corner UVs.
- closest: the strongest vertex v* = argmax q, with its UV in the strongest face around it.
- global_average: the posterior-weighted mean over all vertices of their UV in the part of f*.
UVs are read from face corners (`Charts.face_uv`), so a vertex on a chart seam contributes the UV it
has in the face that was chosen; a vertex's UV "in part p" is the mean of its corners on part p's faces
(of all its corners when it has none there).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from densehmr.body.assets import NUM_PARTS, Charts

UVDecoding = Literal["barycentric", "closest", "global_average"]
MODES: tuple[str, ...] = ("barycentric", "closest", "global_average")
# Pixels decoded at once: bounds memory at _CHUNK x faces.
_CHUNK = 4096


class UVDecoder:
    """Posterior over low-poly vertices -> (part, U, V), for one charted mesh (CPU or CUDA)."""

    def __init__(self, charts: Charts) -> None:
        faces = charts.faces.long()
        num_vertices = int(faces.max()) + 1
        num_faces = faces.shape[0]
        self.faces = faces
        self.face_part = charts.face_part.long()
        self.face_uv = charts.face_uv.float()
        incidence = torch.zeros(num_vertices, num_faces, device=faces.device)
        incidence[faces.reshape(-1), torch.arange(num_faces, device=faces.device).repeat_interleave(3)] = 1.0
        self.incidence = incidence
        self.vertex_part_uv = _vertex_part_uv(faces, self.face_part, self.face_uv, num_vertices)

    def to(self, device: torch.device | str) -> UVDecoder:
        out = object.__new__(UVDecoder)
        for name, value in vars(self).items():
            setattr(out, name, value.to(device))
        return out

    def decode(self, posterior: Tensor, mode: UVDecoding = "barycentric") -> tuple[Tensor, Tensor]:
        """Part (N,) int64 1..24 and UV (N, 2) of pixels with posterior (N, v) (rows sum to 1)."""
        if mode not in MODES:
            raise ValueError(f"unknown UV decoding {mode!r}: expected one of {MODES}")
        parts, uvs = [], []
        for s in range(0, posterior.shape[0], _CHUNK):
            p, uv = self._decode(posterior[s : s + _CHUNK], mode)
            parts.append(p)
            uvs.append(uv)
        if not parts:
            return posterior.new_zeros(0, dtype=torch.long), posterior.new_zeros(0, 2)
        return torch.cat(parts), torch.cat(uvs)

    def _decode(self, q: Tensor, mode: str) -> tuple[Tensor, Tensor]:
        # (N, F) posterior mass on each face's vertices; a gather is ~v/3 times cheaper than q @ incidence.
        score = q.index_select(1, self.faces.reshape(-1)).view(q.shape[0], -1, 3).sum(-1)
        if mode == "closest":
            top = q.argmax(-1)
            around = self.incidence[top] > 0
            face = torch.where(around, score, torch.full_like(score, -1.0)).argmax(-1)
            corner = (self.faces[face] == top[:, None]).float().argmax(-1)
            return self.face_part[face], self.face_uv[face, corner]
        face = score.argmax(-1)
        part = self.face_part[face]
        if mode == "barycentric":
            weight = q.gather(1, self.faces[face])
            weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
            return part, (weight[..., None] * self.face_uv[face]).sum(-2)
        return part, torch.einsum("nv,nvc->nc", q, self.vertex_part_uv[part])

    def decode_maps(
        self, logits: Tensor, foreground: Tensor, mode: UVDecoding = "barycentric"
    ) -> Tensor:
        """IUV image (B, 3, h, w) (I as float, 0 on background) from vertex logits (B, v, h, w) and
        a foreground mask (B, h, w) bool."""
        b, v, h, w = logits.shape
        flat = logits.permute(0, 2, 3, 1).reshape(-1, v)
        keep = foreground.reshape(-1).nonzero().squeeze(1)
        # float32 under mixed precision too: autocast would run global_average's einsum in bf16.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            part, uv = self.decode(torch.softmax(flat[keep].float(), dim=-1), mode)
        out = torch.zeros(b * h * w, 3, device=logits.device, dtype=torch.float32)
        out[keep, 0] = part.float()
        out[keep, 1:] = uv.clamp(0.0, 1.0)
        return out.reshape(b, h, w, 3).permute(0, 3, 1, 2)


def _vertex_part_uv(faces: Tensor, face_part: Tensor, face_uv: Tensor, num_vertices: int) -> Tensor:
    """(25, v, 2) UV of each vertex in each part's chart: mean over its corners on that part's faces,
    falling back to the mean over all its corners."""
    vert = faces.reshape(-1)
    part = face_part.repeat_interleave(3)
    uv = face_uv.reshape(-1, 2)
    sums = torch.zeros(NUM_PARTS + 1, num_vertices, 2, device=faces.device)
    counts = torch.zeros(NUM_PARTS + 1, num_vertices, device=faces.device)
    sums.index_put_((part, vert), uv, accumulate=True)
    counts.index_put_((part, vert), torch.ones_like(uv[:, 0]), accumulate=True)
    overall = sums.sum(0) / counts.sum(0).clamp(min=1)[:, None]
    per_part = sums / counts.clamp(min=1)[..., None]
    return torch.where(counts[..., None] > 0, per_part, overall[None])
