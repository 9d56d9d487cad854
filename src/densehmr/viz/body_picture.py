"""The open body at a glance: front and back views coloured by part, by U and by V, and the low-poly
mesh over the full one (`python -m densehmr.body picture`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps

from densehmr.body.assets import Body
from densehmr.render.iuv import render_iuv
from densehmr.render.rasterize import rasterize

# 24 distinguishable part colours (tab20 + 4), background white.
_PART_COLOURS = np.array(
    [[1, 1, 1]]
    + [list(c) for c in colormaps["tab20"].colors]
    + [[0.2, 0.2, 0.2], [0.6, 0.3, 0.0], [0.0, 0.4, 0.4], [0.5, 0.0, 0.5]]
)


def orthographic_screen(verts: torch.Tensor, size: int, back: bool) -> tuple[torch.Tensor, float, np.ndarray]:
    """(V, 3) T-pose metres -> (1, V, 3) screen px + depth for a front (camera on +z) or back view."""
    v = verts.clone()
    if back:
        v[:, 0], v[:, 2] = -v[:, 0], -v[:, 2]
    centre = (v.max(0).values + v.min(0).values) / 2
    scale = 0.92 * size / float((v.max(0).values - v.min(0).values)[:2].max())
    x = (v[:, 0] - centre[0]) * scale + size / 2
    y = -(v[:, 1] - centre[1]) * scale + size / 2
    z = 10.0 - v[:, 2]  # camera in front of the body, looking along -z
    return torch.stack([x, y, z], -1)[None], scale, centre.numpy()


def draw_body(body: Body, out: Path, size: int = 512) -> Path:
    """Write the picture to `out` (PNG) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    low = body.lowpoly.from_full(body.v_template, body.faces)
    for row, back in enumerate((False, True)):
        screen, _, _ = orthographic_screen(body.v_template, size, back)
        frags = rasterize(screen, body.faces, (size, size))
        part, u, v = (x[0].numpy() for x in render_iuv(frags, body.charts))
        fg = part > 0
        panels = [
            _PART_COLOURS[part],
            np.where(fg[..., None], plt.cm.viridis(u)[..., :3], 1.0),
            np.where(fg[..., None], plt.cm.viridis(v)[..., :3], 1.0),
        ]
        for col, img in enumerate(panels):
            axes[row, col].imshow(img)
        axes[row, 3].imshow(np.where(fg[..., None], 0.85, 1.0) * np.ones((size, size, 3)))
        low_screen, _, _ = orthographic_screen(low, size, back)
        _draw_visible_edges(axes[row, 3], low_screen[0], body.lowpoly.charts.faces, frags.zbuf[0])
        view = "back" if back else "front"
        for col, title in enumerate(("parts", "U", "V", f"low-poly ({body.lowpoly.num_vertices} vertices)")):
            axes[row, col].set_title(f"{title}, {view}")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _draw_visible_edges(ax, screen: torch.Tensor, faces: torch.Tensor, zbuf: torch.Tensor) -> None:
    """Low-poly edges whose midpoint is not hidden behind the full mesh (depth test with a margin)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values.unique(dim=0)
    mid = screen[edges].mean(1)
    h, w = zbuf.shape
    col = mid[:, 0].long().clamp(0, w - 1)
    row = mid[:, 1].long().clamp(0, h - 1)
    visible = mid[:, 2] <= zbuf[row, col] + 0.03
    seg = screen[edges[visible]][..., :2].numpy()
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(seg, colors="crimson", linewidths=0.6))
