"""Our own mesh renderer: cameras, hard rasterization, soft silhouettes and DensePose IUV maps."""

from densehmr.render.cameras import (
    PerspectiveCamera,
    translation_to_weak_perspective,
    weak_perspective_project,
    weak_perspective_to_screen,
    weak_perspective_to_translation,
)
from densehmr.render.iuv import gt_mesh_iuv, mesh_to_iuv, render_iuv, render_mask, screen_to_iuv
from densehmr.render.rasterize import Fragments, rasterize
from densehmr.render.soft import soft_silhouette

__all__ = [
    "Fragments",
    "PerspectiveCamera",
    "gt_mesh_iuv",
    "mesh_to_iuv",
    "rasterize",
    "render_iuv",
    "render_mask",
    "screen_to_iuv",
    "soft_silhouette",
    "translation_to_weak_perspective",
    "weak_perspective_project",
    "weak_perspective_to_screen",
    "weak_perspective_to_translation",
]
