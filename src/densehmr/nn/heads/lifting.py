"""MeshPose's regression branch: every low-poly vertex's X, Y, Z and visibility from a pooled feature.

Each coordinate has its own `BinRegressor`: a pooled feature (B, C) -> 1D conv to hidden x bins
channels -> reshaped to (hidden, bins) -> 1D conv to one row of bin logits per vertex (B, v, bins);
the coordinate is the 1D soft-argmax over the bins mapped linearly onto a range given as fractions of
the crop. Visibility uses the same regressor and takes the mean over bins as a logit (official code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from densehmr.geometry.argsoftmax import argsoftmax_1d


class BinRegressor(nn.Module):
    """(B, C) -> (B, v, bins) logits."""

    def __init__(self, in_channels: int, num_vertices: int, hidden: int = 64, bins: int = 64) -> None:
        super().__init__()
        self.hidden, self.bins = hidden, bins
        self.expand = nn.Sequential(
            nn.Conv1d(in_channels, hidden * bins, 1), nn.BatchNorm1d(hidden * bins), nn.ReLU(inplace=True)
        )
        self.per_vertex = nn.Conv1d(hidden, num_vertices, 1)

    def forward(self, pooled: Tensor) -> Tensor:
        x = self.expand(pooled[:, :, None]).view(-1, self.hidden, self.bins)
        return self.per_vertex(x)


class LiftingHead(nn.Module):
    """Regressed vertices (B, v, 3) crop px and visibility logits (B, v) from pooled features (B, C).

    x spans x_range * W, y spans y_range * H and z spans z_range * H (a depth in pixels, made
    root-relative by the caller), each over `bins` bins whose centres are the soft-argmax positions.
    """

    def __init__(
        self,
        in_channels: int,
        num_vertices: int,
        image_size: tuple[int, int],
        hidden: int = 64,
        bins: int = 64,
        x_range: tuple[float, float] = (-0.5, 1.5),
        y_range: tuple[float, float] = (-0.5, 1.5),
        z_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        h, w = image_size
        self.bins = bins
        self.axes = nn.ModuleList([BinRegressor(in_channels, num_vertices, hidden, bins) for _ in range(3)])
        self.visibility = BinRegressor(in_channels, num_vertices, hidden, bins)
        lo = torch.tensor([x_range[0] * w, y_range[0] * h, z_range[0] * h])
        hi = torch.tensor([x_range[1] * w, y_range[1] * h, z_range[1] * h])
        self.register_buffer("lo", lo)
        self.register_buffer("bin_size", (hi - lo) / bins)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        index = torch.stack([argsoftmax_1d(axis(pooled)) for axis in self.axes], dim=-1)  # (B, v, 3)
        xyz = self.lo + (index + 0.5) * self.bin_size
        return xyz, self.visibility(pooled).mean(-1)
