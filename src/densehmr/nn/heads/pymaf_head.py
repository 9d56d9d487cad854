"""PyMAF's pyramidal mesh-alignment feedback head (Zhang et al., ICCV 2021), on any backbone.

A feature pyramid of three levels at strides 16, 8, 4 (14, 28, 56 for a 224 crop): by default three
deconvolutions (k4 s2, 256 channels, BN, ReLU) from the stride-32 backbone map; for multi-resolution
backbones (HRNet) optionally the backbone's own stride 16/8/4 maps through 1x1 convolutions.
Step t reads level t at a set of points, reduces each point's feature with its own point MLP
(256 -> 128 -> 64 -> 5, the input feature concatenated again before every layer after the first)
and feeds the flattened result to its own HMR regressor, which refines the estimate of step t - 1
(the body's mean parameters for step 0). The estimate passed between steps is detached.

Feedback (PyMAF's Table 4 ablation):
- mesh_aligned (the paper): a 21 x 21 grid at step 0, then the projections of the previous step's
  mesh downsampled to a vertex subset;
- grid: the 21 x 21 grid at every step;
- global: no spatial sampling, the pooled stride-32 backbone feature at every step (HMR's feature).

Point coordinates are grid_sample's normalized ones (align_corners=False): -1 and 1 are the crop's
outer edges, which is also the weak-perspective camera's frame (see `densehmr.render.cameras`).
An optional auxiliary IUV predictor (25 part, 15 coarse-part, 25 U, 25 V channels) reads the finest level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densehmr.body.body_model import BodyModel
from densehmr.nn.heads.hmr_regressor import BodyEstimate, HMRRegressor
from densehmr.render.cameras import weak_perspective_project

FEEDBACKS = ("mesh_aligned", "grid", "global")
PYRAMIDS = ("deconv", "backbone")
NUM_STEPS = 3
PYRAMID_STRIDES = (16, 8, 4)
IUV_CHANNELS = {"part": 25, "coarse": 15, "u": 25, "v": 25}


def grid_points(size: int, device: torch.device | str | None = None) -> Tensor:
    """(size * size, 2) normalized (x, y) at the centres of a size x size partition of the crop, in
    raster order: point k is row k // size, column k % size.

    Cell centres rather than PyMAF's linspace(-1, 1) keep every point inside the map, so none reads
    the zero padding beyond its edge."""
    centres = (2.0 * torch.arange(size, device=device, dtype=torch.float32) + 1.0) / size - 1.0
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def pixels_to_normalized(px: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Normalized coordinates (..., 2) of crop pixels px (..., 2) of an (H, W) crop."""
    h, w = image_size
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=px.dtype, device=px.device)
    return px * scale - 1.0


def sample_features(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinear features (B, C, N) of maps (B, C, h, w) at normalized points (B, N, 2); zero outside."""
    grid = points[:, :, None].to(maps.dtype)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]


class DeconvPyramid(nn.Module):
    """Three deconvolution blocks from the stride-32 map: strides 16, 8, 4 with `channels` each."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        blocks = []
        for k in range(NUM_STEPS):
            blocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_channels if k == 0 else channels, channels, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                )
            )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, features: Sequence[Tensor], strides: Sequence[int]) -> list[Tensor]:
        x = features[list(strides).index(32)]
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        return levels


class LateralPyramid(nn.Module):
    """The backbone's own stride 16, 8, 4 maps, each brought to `channels` by 1x1 conv, BN, ReLU."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], channels: int) -> None:
        super().__init__()
        self.indices = [list(strides).index(s) for s in PYRAMID_STRIDES]
        self.laterals = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[i], channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
            )
            for i in self.indices
        )

    def forward(self, features: Sequence[Tensor], strides: Sequence[int]) -> list[Tensor]:
        return [lateral(features[i]) for lateral, i in zip(self.laterals, self.indices, strict=True)]


class PointFeatureMLP(nn.Module):
    """Per-point reduction (B, C, N) -> (B, dims[-1], N): 1x1 convolutions, LeakyReLU between them, and
    the input feature concatenated to the input of every layer after the first (PIFu's classifier)."""

    def __init__(self, in_channels: int, dims: Sequence[int]) -> None:
        super().__init__()
        layers, previous = [], in_channels
        for k, dim in enumerate(dims):
            layers.append(nn.Conv1d(previous + (in_channels if k > 0 else 0), dim, 1))
            previous = dim
        self.layers = nn.ModuleList(layers)
        self.out_channels = int(dims[-1])

    def forward(self, features: Tensor) -> Tensor:
        y = features
        for k, layer in enumerate(self.layers):
            y = layer(y if k == 0 else torch.cat([y, features], dim=1))
            if k < len(self.layers) - 1:
                y = F.leaky_relu(y)
        return y


class IUVPredictor(nn.Module):
    """1x1 convolutions from a feature map (B, C, h, w) to part (25), coarse (15), U (25), V (25) maps."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, sum(IUV_CHANNELS.values()), 1)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return dict(zip(IUV_CHANNELS, self.conv(features).split(list(IUV_CHANNELS.values()), dim=1), strict=True))


class PyMAFHead(nn.Module):
    """`head(backbone features) -> dict` of every step's estimate and body, and the auxiliary IUV maps.

    backbone_channels / backbone_strides: the backbone's `out_channels` / `out_strides`.
    body_model: posed bodies for the mesh-aligned points and the losses.
    mean_params: the regressors' first estimate (`load_mean_params`).
    sample_vertices: (N,) full-mesh vertex ids whose projections are sampled at steps 1 and 2.
    image_size: (H, W) crop, square (the weak-perspective camera has a single scale).
    """

    def __init__(
        self,
        backbone_channels: Sequence[int],
        backbone_strides: Sequence[int],
        body_model: BodyModel,
        mean_params: dict[str, Tensor],
        sample_vertices: Tensor,
        image_size: tuple[int, int],
        *,
        feedback: str,
        pyramid: str,
        aux_iuv: bool,
        grid_size: int,
        channels: int,
        mlp_dims: Sequence[int],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {feedback!r}")
        if pyramid not in PYRAMIDS:
            raise ValueError(f"pyramid must be one of {PYRAMIDS}, got {pyramid!r}")
        if image_size[0] != image_size[1]:
            raise ValueError(f"PyMAF's weak-perspective camera needs a square crop, got {tuple(image_size)}")
        self.feedback = feedback
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.strides = list(backbone_strides)
        self.body_model = body_model
        self.register_buffer("sample_vertices", sample_vertices.long().clone(), persistent=False)
        self.register_buffer("grid", grid_points(grid_size), persistent=False)

        uses_pyramid = feedback != "global" or aux_iuv
        self.pyramid: nn.Module | None = None
        if uses_pyramid:
            if pyramid == "deconv":
                self.pyramid = DeconvPyramid(backbone_channels[self.strides.index(32)], channels)
            else:
                self.pyramid = LateralPyramid(backbone_channels, backbone_strides, channels)
        self.iuv = IUVPredictor(channels) if aux_iuv else None

        if feedback == "global":
            self.point_mlps = None
            in_features = [backbone_channels[self.strides.index(32)]] * NUM_STEPS
        else:
            self.point_mlps = nn.ModuleList(PointFeatureMLP(channels, mlp_dims) for _ in range(NUM_STEPS))
            reduced = int(mlp_dims[-1])
            grid_features = grid_size * grid_size * reduced
            mesh_features = int(sample_vertices.numel()) * reduced
            in_features = [grid_features if (feedback == "grid" or t == 0) else mesh_features for t in range(NUM_STEPS)]
        # One refinement per step: PyMAF's feedback loop is the three steps, each with its own regressor.
        self.regressors = nn.ModuleList(
            HMRRegressor(n, mean_params, hidden=hidden, dropout=dropout, iterations=1) for n in in_features
        )

    def sample_points(self, step: int, previous: dict | None, batch: int) -> Tensor:
        """Normalized points (B, N, 2) step `step` reads: the grid, or the previous mesh's projections."""
        if self.feedback == "grid" or step == 0:
            return self.grid.expand(batch, -1, -1)
        verts = previous["verts"].detach()[:, self.sample_vertices]
        px = weak_perspective_project(verts, previous["cam"].detach(), self.image_size[1])
        return pixels_to_normalized(px, self.image_size)

    def pose_body(self, est: BodyEstimate) -> dict[str, Tensor]:
        """A step's estimate with its posed body: pose6d, betas, cam, rotmat, verts (B, V, 3) model frame,
        joints_h36m17, joints_coco17 (B, 17, 3)."""
        rotmat = est.rotmat
        body = self.body_model(rotmat, est.betas)
        return {
            "pose6d": est.pose6d, "betas": est.betas, "cam": est.cam, "rotmat": rotmat,
            "verts": body.vertices, "joints_h36m17": body.joints_h36m17, "joints_coco17": body.joints_coco17,
        }

    def forward(self, features: Sequence[Tensor]) -> dict:
        """features: the backbone's maps. Returns steps (list of `pose_body` dicts, one per step),
        points (list of (B, N, 2) normalized sample points, empty for global feedback), iuv (dict of
        (B, c, h, w) maps at the finest level, when aux_iuv), and the last step's entries at top level."""
        batch = features[0].shape[0]
        levels = self.pyramid(features, self.strides) if self.pyramid is not None else None
        pooled = features[self.strides.index(32)].mean(dim=(2, 3)) if self.feedback == "global" else None
        steps: list[dict] = []
        points: list[Tensor] = []
        est: BodyEstimate | None = None
        for t in range(NUM_STEPS):
            if self.feedback == "global":
                feat = pooled
            else:
                pts = self.sample_points(t, steps[-1] if steps else None, batch)
                points.append(pts)
                feat = self.point_mlps[t](sample_features(levels[t], pts)).flatten(1)
            init = est.detach() if est is not None else None
            est = self.regressors[t](feat, init)
            steps.append(self.pose_body(est))
        out: dict = {"steps": steps, "points": points, **steps[-1]}
        if self.iuv is not None:
            out["iuv"] = self.iuv(levels[-1])
        return out
