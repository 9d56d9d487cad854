"""The renderer against independent computations: trimesh ray casting, a dense brute-force soft
rasterizer, analytic projections and analytic UVs on a tilted plane."""

import numpy as np
import pytest
import torch
import trimesh
from trimesh.ray.ray_triangle import RayMeshIntersector

from densehmr.body.assets import Charts
from densehmr.render import (
    PerspectiveCamera,
    gt_mesh_iuv,
    mesh_to_iuv,
    rasterize,
    render_iuv,
    render_mask,
    screen_to_iuv,
    soft_silhouette,
    translation_to_weak_perspective,
    weak_perspective_project,
    weak_perspective_to_screen,
    weak_perspective_to_translation,
)


def _scene() -> trimesh.Trimesh:
    """Two closed meshes, a bumpy (non-convex) sphere partly hiding a smooth one behind it."""
    rng = np.random.default_rng(0)
    bumpy = trimesh.creation.icosphere(subdivisions=2)
    bumpy.vertices *= 1.0 + 0.15 * rng.standard_normal((len(bumpy.vertices), 1))
    bumpy.vertices += [0.3, 0.0, 4.0]
    back = trimesh.creation.icosphere(subdivisions=2, radius=0.8)
    back.vertices += [-0.9, 0.4, 5.5]
    return trimesh.util.concatenate([bumpy, back])


def _ray_cast(mesh: trimesh.Trimesh, focal: float, centre: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit face (-1 for none) and its depth through every pixel centre, (size, size)."""
    rows, cols = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    dirs = np.stack([(cols - centre) / focal, (rows - centre) / focal, np.ones_like(rows)], -1).reshape(-1, 3)
    locations, ray, tri = RayMeshIntersector(mesh).intersects_location(np.zeros_like(dirs), dirs, multiple_hits=True)
    order = np.lexsort((locations[:, 2], ray))  # by ray, then by depth
    _, first = np.unique(ray[order], return_index=True)
    nearest = order[first]
    face = np.full(size * size, -1)
    depth = np.full(size * size, np.inf)
    face[ray[nearest]] = tri[nearest]
    depth[ray[nearest]] = locations[nearest, 2]
    return face.reshape(size, size), depth.reshape(size, size)


def test_rasterize_matches_ray_casting():
    mesh, size, focal = _scene(), 64, 70.0
    want_face, want_depth = _ray_cast(mesh, focal, size / 2, size)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None]
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    camera = PerspectiveCamera.for_crop(focal, size, 1)
    frags = rasterize(camera.to_screen(verts), faces, (size, size), perspective_correct=True)
    face = frags.face_idx[0].numpy()

    covered = want_face >= 0
    assert 0.2 < covered.mean() < 0.8
    assert (face[covered] >= 0).mean() > 0.995
    assert (face[~covered] == -1).mean() > 0.995
    both = covered & (face >= 0)
    same = face == want_face
    assert same[both].mean() >= 0.99
    np.testing.assert_allclose(frags.zbuf[0].numpy()[same & both], want_depth[same & both], atol=1e-3)
    assert torch.isinf(frags.zbuf[0][~frags.mask[0]]).all()


def test_barycentrics_reproduce_pixel_centres():
    mesh, size = _scene(), 48
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None].repeat(2, 1, 1)
    verts[1, :, 0] += 0.2  # a second, different image in the batch
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    camera = PerspectiveCamera.for_crop(55.0, size, 2)
    screen = camera.to_screen(verts)
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centres = torch.stack([cols, rows], -1)

    frags = rasterize(screen, faces, (size, size))
    mask = frags.mask
    corners = screen[torch.arange(2)[:, None, None, None], faces[frags.face_idx.clamp(min=0)]]  # (B,H,W,3,3)
    xy = (frags.bary[..., None] * corners[..., :2]).sum(-2)
    torch.testing.assert_close(xy[mask], centres.expand(2, -1, -1, -1)[mask], atol=1e-3, rtol=0)
    assert (frags.bary[mask] >= -1e-4).all()

    # Perspective-correct barycentrics interpolate camera-space points that project to the centres.
    frags = rasterize(screen, faces, (size, size), perspective_correct=True)
    corners = verts[torch.arange(2)[:, None, None, None], faces[frags.face_idx.clamp(min=0)]]
    point = (frags.bary[..., None] * corners).sum(-2)
    mask = frags.mask
    torch.testing.assert_close(
        camera.project(point.view(2, -1, 3)).view(2, size, size, 2)[mask],
        centres.expand(2, -1, -1, -1)[mask],
        atol=2e-3,
        rtol=0,
    )
    torch.testing.assert_close(point[..., 2][mask], frags.zbuf[mask], atol=1e-5, rtol=1e-5)


def test_rasterize_covers_closed_triangle_and_drops_faces_behind_camera():
    verts = torch.tensor([[[1.0, 1.0, -1.0], [9.0, 1.0, -1.0], [1.0, 9.0, -1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    assert (rasterize(verts, faces, (10, 10)).face_idx == -1).all()
    verts[..., 2] = 1.0
    frags = rasterize(verts, faces, (10, 10))
    # Pixel centres (j + 0.5, i + 0.5) with j + i + 1 <= 9 - 1 lie inside the triangle x + y <= 10.
    rows, cols = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    inside = (cols >= 1) & (rows >= 1) & (cols + rows + 1 <= 10)
    assert torch.equal(frags.mask[0], inside)


def _soft_reference(xy: torch.Tensor, faces: torch.Tensor, size: int, sigma: float, values: torch.Tensor):
    """Dense SoftRas silhouette over all faces and all pixels, through autograd."""
    centres = torch.arange(size, dtype=xy.dtype) + 0.5
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    p = torch.stack([cols, rows], -1).reshape(-1, 2)  # (N, 2)
    a = xy[:, faces][:, :, :, None]  # (B, F, 3, 1, 2)
    ab = xy[:, faces].roll(-1, dims=2)[:, :, :, None] - a
    ap = p - a  # (B, F, 3, N, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0, 1)
    d2 = ((ap - t[..., None] * ab) ** 2).sum(-1).amin(dim=2)  # (B, F, N)
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]  # (B, F, 3, N), edge k
    bary = cross.roll(-1, dims=2) / cross.sum(2, keepdim=True)  # vertex k is opposite edge k + 1
    inside = (bary >= 0).all(dim=2)
    cover = torch.sigmoid(torch.where(inside, d2, -d2) / sigma)
    clamped = bary.clamp(0, 1)
    w = (clamped / clamped.sum(2, keepdim=True) * values[:, faces][..., None]).sum(2)
    return (1 - torch.prod(1 - cover * w, dim=1)).view(-1, size, size)


def _small_mesh(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-image batch of a fan of 4 triangles (both windings) over a 16 x 16 image."""
    gen = torch.Generator().manual_seed(1)
    xy = torch.tensor([[8.0, 8.0], [3.0, 3.5], [12.5, 4.0], [13.0, 12.0], [4.0, 11.5]], dtype=dtype)
    xy = xy + 0.4 * torch.randn(2, 5, 2, generator=gen, dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [0, 3, 2], [0, 3, 4], [0, 1, 4]])
    return xy, faces


def test_soft_silhouette_matches_dense_reference():
    xy, faces = _small_mesh()
    values = torch.rand(2, 5, generator=torch.Generator().manual_seed(2), dtype=xy.dtype) * 0.9
    xy.requires_grad_(True)
    values.requires_grad_(True)
    weights = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3), dtype=xy.dtype)

    got = soft_silhouette(xy, faces, (16, 16), sigma=1.5, vertex_values=values)
    want = _soft_reference(xy, faces, 16, 1.5, values)
    torch.testing.assert_close(got, want, atol=5e-4, rtol=0)  # culled faces contribute < 1e-4 each
    got_grads = torch.autograd.grad((got * weights).sum(), (xy, values))
    want_grads = torch.autograd.grad((want * weights).sum(), (xy, values))
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=5e-3, rtol=1e-2)
    only_values = soft_silhouette(xy.detach(), faces, (16, 16), sigma=1.5, vertex_values=values)
    (grad_values,) = torch.autograd.grad((only_values * weights).sum(), (values,))
    torch.testing.assert_close(grad_values, want_grads[1], atol=5e-3, rtol=1e-2)

    ones = soft_silhouette(xy, faces, (16, 16), sigma=1.5)
    torch.testing.assert_close(ones, _soft_reference(xy, faces, 16, 1.5, torch.ones_like(values)), atol=5e-4, rtol=0)


def test_soft_silhouette_gradcheck():
    xy, faces = _small_mesh()
    # One image at half size (8 x 9 px) keeps the full Jacobian quick; batches are checked above.
    xy = (xy[:1] * 0.5).requires_grad_(True)
    values = torch.rand(1, 5, generator=torch.Generator().manual_seed(4), dtype=xy.dtype) * 0.8 + 0.1
    values.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, w: soft_silhouette(v, faces, (8, 9), sigma=0.7, vertex_values=w), (xy, values)
    )
    assert torch.autograd.gradcheck(lambda v: soft_silhouette(v, faces, (8, 9), sigma=0.7), (xy,))


def _soft_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float32 batch of 3 bumpy ellipsoids over 48 x 48 px: screen xy, faces, vertex values, pixel
    weights."""
    from densehmr.render.benchmark import bumpy_ellipsoid

    verts, faces = bumpy_ellipsoid(20, 30, (0.25, 0.4, 0.2))
    gen = torch.Generator().manual_seed(5)
    xy = verts[None, :, :2] * 40.0 + 24.0 + torch.randn(3, 1, 2, generator=gen)
    values = torch.rand(3, verts.shape[0], generator=gen)
    return xy, faces, values, torch.rand(3, 48, 48, generator=gen)


def _soft_with_grads(xy, faces, values, weights, **options):
    xy, values = xy.clone().requires_grad_(True), values.clone().requires_grad_(True)
    out = soft_silhouette(xy, faces, (48, 48), sigma=1.0, vertex_values=values, **options)
    return (out, *torch.autograd.grad((out * weights).sum(), (xy, values)))


@pytest.mark.slow  # compiles two kernels (about 30 s on 2 cores without inductor's on-disk cache)
def test_soft_silhouette_compiled_matches_eager():
    xy, faces, values, weights = _soft_batch()
    compiled = _soft_with_grads(xy, faces, values, weights, compiled=True)
    eager = _soft_with_grads(xy.double(), faces, values.double(), weights.double(), compiled=False)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got.double(), want, atol=1e-5 * want.abs().max().item(), rtol=1e-4)


def test_soft_silhouette_runs_eagerly_when_compiling_fails(monkeypatch):
    import densehmr.render.soft as soft

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    kernels = (soft._COMPILED_LOG_EMPTY, soft._COMPILED_GRADS)
    for kernel in kernels:
        monkeypatch.setattr(kernel, "compiled", None)
        monkeypatch.setattr(kernel, "failed", False)
    monkeypatch.setattr(torch, "compile", broken)
    xy, faces, values, weights = _soft_batch()
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        got = _soft_with_grads(xy, faces, values, weights, compiled=True)
    assert all(kernel.failed for kernel in kernels)
    want = _soft_with_grads(xy, faces, values, weights, compiled=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def _sphere_screen(scale: torch.Tensor, shift: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)
    verts = verts * torch.tensor([1.0, 0.7, 1.0])  # an ellipsoid, so that scale is not rotation-blind
    cam = torch.cat([scale.view(1), shift.view(2)])[None]
    return weak_perspective_to_screen(verts[None], cam, size), torch.tensor(sphere.faces, dtype=torch.long)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_soft_silhouette_approaches_hard_mask():
    screen, faces = _sphere_screen(torch.tensor(0.6), torch.tensor([0.1, -0.05]), 64)
    hard = rasterize(screen + torch.tensor([0.0, 0.0, 5.0]), faces, (64, 64)).mask
    soft = soft_silhouette(screen, faces, (64, 64), sigma=1e-3)
    assert _iou(soft > 0.5, hard) > 0.95
    assert (soft[~hard] < 0.5).float().mean() > 0.99


def test_soft_silhouette_fits_scale_and_translation():
    size, sigma = 64, 2.0
    true_scale, true_shift = torch.tensor(0.55), torch.tensor([0.15, -0.1])
    target_screen, faces = _sphere_screen(true_scale, true_shift, size)
    target = soft_silhouette(target_screen, faces, (size, size), sigma=sigma)

    log_scale = torch.tensor(np.log(0.4), requires_grad=True)
    shift = torch.tensor([-0.1, 0.1], requires_grad=True)
    opt = torch.optim.Adam([log_scale, shift], lr=0.03)
    for _ in range(80):
        screen, _ = _sphere_screen(log_scale.exp(), shift, size)
        loss = ((soft_silhouette(screen, faces, (size, size), sigma=sigma) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    screen, _ = _sphere_screen(log_scale.exp(), shift, size)
    depth = torch.tensor([0.0, 0.0, 5.0])
    fitted = rasterize(screen.detach() + depth, faces, (size, size)).mask
    assert _iou(fitted, rasterize(target_screen + depth, faces, (size, size)).mask) > 0.95
    assert abs(log_scale.exp().item() - true_scale.item()) < 0.01
    torch.testing.assert_close(shift.detach(), true_shift, atol=0.01, rtol=0)


def _tilted_quad() -> tuple[torch.Tensor, Charts, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square patch P(u, v) = origin + u a + v b tilted in depth, charted by (U, V) = (u, v)."""
    origin = torch.tensor([-0.5, -0.5, 2.0], dtype=torch.float64)
    a = torch.tensor([1.0, 0.0, 0.8], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0, 0.3], dtype=torch.float64)
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    verts = origin + uv[:, :1] * a + uv[:, 1:] * b
    faces = torch.tensor([[0, 1, 3], [1, 2, 3]])
    charts = Charts(faces=faces, face_part=torch.tensor([3, 7]), face_uv=uv[faces].float())
    return verts, charts, origin, a, b


def test_mesh_to_iuv_matches_analytic_uv():
    verts, charts, origin, a, b = _tilted_quad()
    size = 40
    camera = PerspectiveCamera.for_crop(50.0, size, 1)
    iuv = mesh_to_iuv(verts[None].float(), charts, camera, (size, size))[0]

    # Where the ray through each pixel centre meets the plane: origin + u a + v b = lam d.
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = torch.stack([(cols - size / 2) / 50.0, (rows - size / 2) / 50.0, torch.ones_like(rows)], -1)
    system = torch.stack([a.expand(size, size, 3), b.expand(size, size, 3), -d.double()], -1)
    u, v, _ = torch.linalg.solve(system, -origin.expand(size, size, 3)).unbind(-1)
    margin = 1e-3
    inside = (u > margin) & (u < 1 - margin) & (v > margin) & (v < 1 - margin)
    clear = inside & ((u + v - 1).abs() > margin)
    outside = (u < -margin) | (u > 1 + margin) | (v < -margin) | (v > 1 + margin)
    assert clear.sum() > 300

    part = torch.where(u + v < 1, 3, 7)
    assert torch.equal(iuv[0][clear].long(), part[clear])
    assert (iuv[0][outside] == 0).all()
    torch.testing.assert_close(iuv[1][inside], u[inside].float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(iuv[2][inside], v[inside].float(), atol=1e-4, rtol=0)


def test_gt_mesh_iuv_on_a_coarser_grid_and_only_where_a_sample_has_a_mesh_and_camera():
    verts, charts, origin, a, b = _tilted_quad()
    crop, size = 40, 20
    k = torch.tensor([[50.0, 0.0, crop / 2], [0.0, 50.0, crop / 2], [0.0, 0.0, 1.0]])
    cam_k = torch.stack([k, k, torch.zeros(3, 3)])  # the third sample has no camera
    has_mesh = torch.tensor([True, False, True])
    iuv, keep = gt_mesh_iuv(verts[None].float().expand(3, -1, -1), cam_k, has_mesh, charts, (crop, crop), (size, size))
    assert keep.tolist() == [True, False, False]
    assert (iuv[1:] == 0).all() and iuv.isfinite().all()
    # Each grid cell's centre is a crop point: (j + 0.5) crop / size px. The plane's (u, v) seen there:
    rows, cols = torch.meshgrid((torch.arange(size) + 0.5) * crop / size, (torch.arange(size) + 0.5) * crop / size,
                                indexing="ij")
    d = torch.stack([(cols - crop / 2) / 50.0, (rows - crop / 2) / 50.0, torch.ones_like(rows)], -1)
    system = torch.stack([a.expand(size, size, 3), b.expand(size, size, 3), -d.double()], -1)
    u, v, _ = torch.linalg.solve(system, -origin.expand(size, size, 3)).unbind(-1)
    inside = (u > 1e-3) & (u < 1 - 1e-3) & (v > 1e-3) & (v < 1 - 1e-3)
    assert inside.sum() > 50
    torch.testing.assert_close(iuv[0, 1][inside], u[inside].float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(iuv[0, 2][inside], v[inside].float(), atol=1e-4, rtol=0)


def test_screen_to_iuv_and_render_iuv_on_an_affine_quad():
    size = 32
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    screen = torch.cat([uv * 20 + 6, torch.tensor([[-3.0], [-1.0], [-2.0], [-4.0]])], -1)[None]
    charts = Charts(
        faces=torch.tensor([[0, 1, 3], [1, 2, 3]]),
        face_part=torch.tensor([5, 5]),
        face_uv=uv[torch.tensor([[0, 1, 3], [1, 2, 3]])],
    )
    iuv = screen_to_iuv(screen, charts, (size, size))[0]
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    u, v = (cols - 6) / 20, (rows - 6) / 20
    inside = (u > 0.01) & (u < 0.99) & (v > 0.01) & (v < 0.99)
    assert (iuv[0][inside] == 5).all() and (iuv[0][~((u >= 0) & (u <= 1) & (v >= 0) & (v <= 1))] == 0).all()
    torch.testing.assert_close(iuv[1][inside], u[inside], atol=1e-5, rtol=0)
    torch.testing.assert_close(iuv[2][inside], v[inside], atol=1e-5, rtol=0)

    frags = rasterize(screen + torch.tensor([0.0, 0.0, 10.0]), charts.faces, (size, size))
    part, u_map, v_map = render_iuv(frags, charts)
    assert part.dtype == torch.int64
    assert torch.equal(part > 0, render_mask(frags))
    assert (u_map[part == 0] == 0).all() and (v_map[part == 0] == 0).all()


def test_projections_by_hand():
    camera = PerspectiveCamera(torch.tensor([[500.0, 400.0]]), torch.tensor([[100.0, 50.0]]))
    point = torch.tensor([[[0.2, -0.1, 2.0]]])
    torch.testing.assert_close(camera.project(point), torch.tensor([[[150.0, 30.0]]]))
    torch.testing.assert_close(camera.to_screen(point), torch.tensor([[[150.0, 30.0, 2.0]]]))
    # ndc = 0.5 * ((0.3, 0.4) + (0.1, -0.2)) = (0.2, 0.1); pixels = (ndc + 1) * 224 / 2.
    cam = torch.tensor([[0.5, 0.1, -0.2]])
    weak = weak_perspective_project(torch.tensor([[[0.3, 0.4, 7.0]]]), cam, 224)
    torch.testing.assert_close(weak, torch.tensor([[[134.4, 123.2]]]))


def test_weak_perspective_round_trip_and_limit():
    gen = torch.Generator().manual_seed(5)
    cam = torch.rand(6, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.4, 0.4]) + torch.tensor(
        [0.5, -0.2, -0.2]
    )
    transl = weak_perspective_to_translation(cam, 5000.0, 224)
    torch.testing.assert_close(transl[:, 2], 2 * 5000.0 / (224 * cam[:, 0]))
    torch.testing.assert_close(translation_to_weak_perspective(transl, 5000.0, 224), cam)

    # A perspective camera with that translation and a long focal length converges to the weak one.
    points = torch.rand(6, 20, 3, generator=gen, dtype=torch.float64) - 0.5
    focal = 1e7
    camera = PerspectiveCamera.for_crop(focal, 224, 6, dtype=torch.float64)
    persp = camera.project(points + weak_perspective_to_translation(cam, focal, 224)[:, None])
    torch.testing.assert_close(persp, weak_perspective_project(points, cam, 224), atol=1e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mesh = _scene()
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None]
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    screen = PerspectiveCamera.for_crop(70.0, 64, 1).to_screen(verts)
    cpu = rasterize(screen, faces, (64, 64), perspective_correct=True)
    gpu = rasterize(screen.cuda(), faces.cuda(), (64, 64), perspective_correct=True)
    assert (cpu.face_idx == gpu.face_idx.cpu()).float().mean() > 0.999
    xy = screen[..., :2].clone().requires_grad_(True)
    xy_gpu = screen[..., :2].cuda().requires_grad_(True)
    soft_cpu = soft_silhouette(xy, faces, (64, 64))
    soft_gpu = soft_silhouette(xy_gpu, faces.cuda(), (64, 64))
    torch.testing.assert_close(soft_gpu.cpu(), soft_cpu, atol=1e-4, rtol=0)
    soft_cpu.sum().backward()
    soft_gpu.sum().backward()
    torch.testing.assert_close(xy_gpu.grad.cpu(), xy.grad, atol=1e-3, rtol=1e-3)
