"""The renderer on the check's device against the CPU: the open body's mesh (posed in its template,
turned a little, 2.5 m away) rasterized, turned into IUV maps and soft silhouettes, with gradients.

Tolerances: the face seen at a pixel agrees on >= FACE_AGREEMENT of the pixels (a pixel centre exactly
on a shared edge may go either way); U and V where the face agrees within UV_ABS_TOL; the soft
silhouette within SOFT_ABS_TOL and its gradient w.r.t. the vertices within GRAD_REL_TOL of its
largest element (float32 sums in another order).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field

import torch

from densehmr.gpu_check.settings import CheckSettings

FACE_AGREEMENT = 0.999
UV_ABS_TOL = 1e-4
SOFT_ABS_TOL = 1e-4
GRAD_REL_TOL = 1e-3
DISTANCE_M = 2.5
TURN_RAD = 0.4


@dataclass(frozen=True)
class RenderCheck:
    """name, the measured value, its tolerance as text, and whether it passed."""

    name: str
    value: float
    tolerance: str
    passed: bool


@dataclass(frozen=True)
class RenderResult:
    checks: list[RenderCheck] = field(default_factory=list)
    ms: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> device -> median ms
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(c.passed for c in self.checks)


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def body_screen(size: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Screen vertices (1, V, 3) of the open body seen by a size-px camera, its faces (F, 3), its charts."""
    from densehmr.body import load_body
    from densehmr.render import PerspectiveCamera

    body = load_body("open")
    c, s = math.cos(TURN_RAD), math.sin(TURN_RAD)
    turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    verts = body.v_template @ turn.T
    verts = verts - verts.mean(0) + torch.tensor([0.0, 0.0, DISTANCE_M])
    verts[:, 1] = -verts[:, 1] + 2 * float(verts[:, 1].mean())  # y down, as the camera frame has it
    camera = PerspectiveCamera.for_crop(1.2 * size, size, 1)
    return camera.to_screen(verts[None]), body.faces.long(), body.charts


def render_on(device: torch.device, screen: torch.Tensor, faces: torch.Tensor, charts, size: int):
    """Fragments' face ids, (I, U, V), soft silhouette and its gradient, all on `device`, returned on CPU."""
    from densehmr.render import rasterize, render_iuv
    from densehmr.render.soft import soft_silhouette

    screen, faces = screen.to(device), faces.to(device)
    frags = rasterize(screen, faces, (size, size), perspective_correct=True)
    part, u, v = render_iuv(frags, charts)
    xy = screen[..., :2].clone().requires_grad_(True)
    soft = soft_silhouette(xy, faces, (size, size))
    soft.sum().backward()
    return [t.detach().cpu() for t in (frags.face_idx, part, u, v, soft, xy.grad)]


def check_renderer(settings: CheckSettings) -> RenderResult:
    """The renderer on settings.device against the CPU; never raises."""
    from densehmr.render import rasterize
    from densehmr.render.soft import soft_silhouette

    size = settings.render_px
    try:
        screen, faces, charts = body_screen(size)
        device = torch.device(settings.device)
        face_c, part_c, u_c, v_c, soft_c, grad_c = render_on(torch.device("cpu"), screen, faces, charts, size)
        face_d, part_d, u_d, v_d, soft_d, grad_d = render_on(device, screen, faces, charts, size)
        same = face_c == face_d
        agree = float(same.float().mean())
        covered = face_c >= 0
        both = same & covered
        uv_err = float(torch.maximum((u_c - u_d).abs(), (v_c - v_d).abs())[both].max()) if both.any() else 0.0
        soft_err = float((soft_c - soft_d).abs().max())
        grad_scale = float(grad_c.abs().max())
        grad_err = float((grad_c - grad_d).abs().max()) / grad_scale if grad_scale > 0 else 0.0
        part_agree = float((part_c == part_d).float().mean())
        checks = [
            RenderCheck("face id agreement", agree, f">= {FACE_AGREEMENT}", agree >= FACE_AGREEMENT),
            RenderCheck("body pixels (CPU)", float(covered.sum()), "> 0", bool(covered.any())),
            RenderCheck("part id agreement", part_agree, f">= {FACE_AGREEMENT}", part_agree >= FACE_AGREEMENT),
            RenderCheck("max abs U, V difference (same face)", uv_err, f"<= {UV_ABS_TOL:g}", uv_err <= UV_ABS_TOL),
            RenderCheck("soft silhouette max abs difference", soft_err, f"<= {SOFT_ABS_TOL:g}",
                        soft_err <= SOFT_ABS_TOL),
            RenderCheck("soft silhouette gradient: max abs difference / max abs", grad_err, f"<= {GRAD_REL_TOL:g}",
                        grad_err <= GRAD_REL_TOL),
        ]
        ms: dict[str, dict[str, float]] = {"rasterize": {}, "soft silhouette + backward": {}}
        for where in dict.fromkeys(["cpu", settings.device]):
            dev = torch.device(where)
            s, f = screen.to(dev), faces.to(dev)
            ms["rasterize"][where] = _median_ms(
                lambda s=s, f=f: rasterize(s, f, (size, size), perspective_correct=True), dev, settings.render_repeats
            )

            def soft_step(s=s, f=f):
                xy = s[..., :2].clone().requires_grad_(True)
                soft_silhouette(xy, f, (size, size)).sum().backward()

            ms["soft silhouette + backward"][where] = _median_ms(soft_step, dev, settings.render_repeats)
        return RenderResult(checks, ms)
    except Exception as exc:  # a failure is a finding of the check, reported with the others
        return RenderResult(error=traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0])
