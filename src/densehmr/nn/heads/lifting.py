"""MeshPose's regression branch: every low-poly vertex's X, Y, Z and visibility from a pooled feature.

Each coordinate has its own `BinRegressor`: a pooled feature (B, C) -> 1D conv to hidden x bins
channels -> reshaped to (hidden, bins) -> 1D conv to one row of bin logits per vertex (B, v, bins);
the coordinate is the 1D soft-argmax over the bins (an index in [0, bins - 1]) mapped linearly onto a
range given as fractions of the crop: the first bin reaches its low end, the last bin its high end, as
the official `MeshPoseBranchFusion` maps its bins. Visibility uses the same regressor and takes the
mean over bins as a logit (official code).

Official reach (bins 0..63 scaled by 96 / 64, then x = 4.5 X - 96, y = 4.5 Y - 72, z = 4.5 Z - 144 on
the 72 x 96 heatmap of a 288 x 384 crop): x in [-4/3, 4.573] W, y in [-0.75, 3.680] H, z in [-1.5,
2.930] H, so that vertices far outside a truncated crop stay representable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densehmr.geometry.argsoftmax import argsoftmax_1d


class BinRegressor(nn.Module):
    """(B, C) -> (B, v, bins) logits."""

    def __init__(self, in_channels: int, num_vertices: int, hidden: int, bins: int) -> None:
        super().__init__()
        self.hidden, self.bins = hidden, bins
        self.expand = nn.Sequential(
            nn.Conv1d(in_channels, hidden * bins, 1), nn.BatchNorm1d(hidden * bins), nn.ReLU(inplace=True)
        )
        self.per_vertex = nn.Conv1d(hidden, num_vertices, 1)

    def forward(self, pooled: Tensor) -> Tensor:
        conv, norm, relu = self.expand
        # The length-1 Conv1d as the matrix product it is: torch's convolution path was 10x slower here.
        # squeeze, not [..., 0]: its gradient is a view too, where indexing zero-filled a full-size one.
        x = relu(norm(F.linear(pooled, conv.weight.squeeze(-1), conv.bias)))
        return self.per_vertex(x.view(-1, self.hidden, self.bins))


class LiftingHead(nn.Module):
    """Regressed vertices (B, v, 3) crop px and visibility logits (B, v) from pooled features (B, C).

    x spans x_range * W, y spans y_range * H and z spans z_range * H (a depth in pixels, made
    root-relative by the caller): soft-argmax index 0 gives the range's low end, bins - 1 its high end.
    """

    def __init__(
        self,
        in_channels: int,
        num_vertices: int,
        image_size: tuple[int, int],
        *,
        hidden: int,
        bins: int,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        z_range: tuple[float, float],
    ) -> None:
        super().__init__()
        h, w = image_size
        self.bins = bins
        self.axes = nn.ModuleList([BinRegressor(in_channels, num_vertices, hidden, bins) for _ in range(3)])
        self.visibility = BinRegressor(in_channels, num_vertices, hidden, bins)
        lo = torch.tensor([x_range[0] * w, y_range[0] * h, z_range[0] * h])
        hi = torch.tensor([x_range[1] * w, y_range[1] * h, z_range[1] * h])
        # Derived from the config (saved as hyperparameters), not state.
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("step", (hi - lo) / (bins - 1), persistent=False)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        index = torch.stack([argsoftmax_1d(axis(pooled)) for axis in self.axes], dim=-1)  # (B, v, 3)
        xyz = self.lo + index * self.step
        return xyz, self.visibility(pooled).mean(-1)
