"""Renderer timings on CPU: `python -m densehmr.render.benchmark`.

Targets (2 threads): hard rasterization of a 27k-face, 14k-vertex closed mesh covering ~40% of a
256 x 256 image <= 50 ms per image; soft silhouette of a batch of 16 meshes of ~600 vertices /
~1200 faces at 64 x 64, forward + backward <= 150 ms. The test meshes are bumpy ellipsoids made
here, so the numbers do not depend on the body assets.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from densehmr.render.cameras import PerspectiveCamera
from densehmr.render.rasterize import rasterize
from densehmr.render.soft import soft_silhouette


def bumpy_ellipsoid(
    rings: int, segments: int, radii: tuple[float, float, float], bump: float = 0.1
) -> tuple[Tensor, Tensor]:
    """A closed, star-shaped test mesh: (V, 3) vertices, V = rings * segments + 2, and
    (F, 3) int64 faces, F = 2 * rings * segments, centred at the origin."""
    theta = torch.arange(1, rings + 1, dtype=torch.float64) * math.pi / (rings + 1)
    phi = torch.arange(segments, dtype=torch.float64) * 2 * math.pi / segments
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    r = 1.0 + bump * torch.sin(5 * t) * torch.cos(3 * p)
    unit = torch.stack([torch.sin(t) * torch.cos(p), torch.cos(t), torch.sin(t) * torch.sin(p)], -1)
    poles = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    verts = torch.cat([(unit * r[..., None]).reshape(-1, 3), poles]) * torch.tensor(radii)

    grid = torch.arange(rings * segments).view(rings, segments)
    a, b = grid[:-1], grid[:-1].roll(-1, dims=1)
    c, d = grid[1:], grid[1:].roll(-1, dims=1)
    quads = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)]).reshape(-1, 3)
    top, bottom = rings * segments, rings * segments + 1
    first, last = grid[0], grid[-1]
    cap_top = torch.stack([torch.full_like(first, top), first, first.roll(-1)], -1)
    cap_bottom = torch.stack([torch.full_like(last, bottom), last.roll(-1), last], -1)
    faces = torch.cat([quads, cap_top, cap_bottom]).flip(1)  # outward normals
    return verts.float(), faces


def _median_ms(fn: Callable[[], object], repeats: int, threads: int, warmup: int = 2) -> float:
    """Median wall time (ms) of fn over `repeats` calls with torch limited to `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def bench_hard_raster(image_size: int = 256, batch: int = 1, repeats: int = 10, threads: int = 2) -> float:
    """Median ms per image to rasterize (perspective-correct) a 27,360-face, 13,682-vertex closed
    mesh covering ~41% of a square image."""
    verts, faces = bumpy_ellipsoid(90, 152, (0.42, 0.70, 0.3))
    verts = (verts + torch.tensor([0.0, 0.0, 3.0])).expand(batch, -1, -1)
    camera = PerspectiveCamera.for_crop(500.0 * image_size / 256, image_size, batch)
    screen = camera.to_screen(verts)
    size = (image_size, image_size)
    ms = _median_ms(lambda: rasterize(screen, faces, size, perspective_correct=True), repeats, threads)
    return ms / batch


def bench_soft_silhouette(image_size: int = 64, batch: int = 16, repeats: int = 10, threads: int = 2) -> float:
    """Median ms of forward + backward (w.r.t. vertices and vertex values) soft silhouettes of a
    batch of 602-vertex / 1,200-face meshes covering ~26% of a square image, sigma = 1 px^2."""
    verts, faces = bumpy_ellipsoid(20, 30, (0.25, 0.4, 0.2))
    gen = torch.Generator().manual_seed(0)
    jitter = torch.randn(batch, 1, 2, generator=gen)
    screen = verts[None, :, :2] * (image_size / 1.2) + image_size / 2 + jitter
    screen.requires_grad_(True)
    values = torch.rand(batch, verts.shape[0], generator=gen, requires_grad=True)
    size = (image_size, image_size)

    def step() -> None:
        soft_silhouette(screen, faces, size, sigma=1.0, vertex_values=values).sum().backward()

    return _median_ms(step, repeats, threads)


def main() -> None:
    print(f"hard raster, 27k faces, 256x256: {bench_hard_raster():.1f} ms/image")
    print(f"soft silhouette, B=16, 1.2k faces, 64x64, fwd+bwd: {bench_soft_silhouette():.1f} ms")


if __name__ == "__main__":
    main()
