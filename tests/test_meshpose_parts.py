"""MeshPose building blocks on hand-solved cases: soft-argmax, heads, UV decoding, each loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import ndimage

from densehmr.body.assets import Charts
from densehmr.geometry.argsoftmax import argsoftmax_1d, argsoftmax_2d
from densehmr.geometry.uv_decoding import UVDecoder
from densehmr.losses import meshpose as L
from densehmr.nn.heads.lifting import LiftingHead
from densehmr.nn.heads.vertexpose import MaskHead, StrideFourNeck, VertexPoseHead

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ----------------------------------------------------------------------------- soft-argmax
def test_delta_heatmap_gives_its_pixel_centre():
    heat = torch.zeros(2, 3, 8, 6)
    cells = [(1, 4), (7, 0), (3, 5)]
    for c, (i, j) in enumerate(cells):
        heat[:, c, i, j] = 5.0
    xy = argsoftmax_2d(heat, gain=10.0)  # exp(50) against 47 other cells: a delta
    expected = torch.tensor([[j + 0.5, i + 0.5] for i, j in cells])
    torch.testing.assert_close(xy, expected.expand(2, 3, 2), atol=1e-5, rtol=0)


def test_argsoftmax_2d_is_the_softmax_expectation_with_gain():
    # Two peaks: logits 1 at (row 0, col 0) and 2 at (row 2, col 3) of a 3 x 4 map, gain 0.7.
    heat = torch.zeros(1, 1, 3, 4)
    heat[0, 0, 0, 0], heat[0, 0, 2, 3] = 1.0, 2.0
    w = np.exp(0.7 * heat.numpy()[0, 0])
    w /= w.sum()
    cols, rows = np.meshgrid(np.arange(4) + 0.5, np.arange(3) + 0.5)
    expected = [float((w * cols).sum()), float((w * rows).sum())]
    assert argsoftmax_2d(heat, 0.7)[0, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_argsoftmax_1d_delta_and_uniform():
    logits = torch.zeros(2, 64)
    logits[0, 17] = 100.0
    out = argsoftmax_1d(logits)
    assert out[0].item() == pytest.approx(17.0, abs=1e-4)
    assert out[1].item() == pytest.approx(31.5, abs=1e-4)


# ----------------------------------------------------------------------------- heads
def test_vertexpose_head_scales_positions_by_its_stride():
    head = VertexPoseHead(4, num_vertices=3, stride=4, gain=10.0, learn_gain=False)
    with torch.no_grad():
        head.heatmap.weight.zero_()
        head.heatmap.bias.zero_()
    feats = torch.zeros(1, 4, 8, 8)
    heat, xy = head(feats)
    assert heat.shape == (1, 3, 8, 8)
    torch.testing.assert_close(xy, torch.full((1, 3, 2), 16.0))  # uniform: the crop centre, 32 / 2
    assert "log_gain" not in dict(head.named_parameters())
    learned = VertexPoseHead(4, 3, stride=4, learn_gain=True, gain=10.0)
    assert learned.gain.item() == pytest.approx(10.0)
    assert "log_gain" in dict(learned.named_parameters())


def test_neck_and_mask_head_shapes():
    neck = StrideFourNeck([8, 16, 32, 64], 12)
    levels = [torch.randn(2, c, 32 // s, 24 // s) for c, s in zip([8, 16, 32, 64], [1, 2, 4, 8], strict=True)]
    out = neck(levels)
    assert out.shape == (2, 12, 32, 24)
    assert MaskHead(12)(out).shape == (2, 1, 32, 24)


@pytest.mark.parametrize("convs", [1, 2, 3])
def test_mask_head_sees_one_pixel_further_per_convolution(convs):
    torch.manual_seed(0)
    head = MaskHead(4, hidden=6, convs=convs).eval()
    features = torch.randn(1, 4, 15, 15, requires_grad=True)
    head(features)[0, 0, 7, 7].backward()
    rows, cols = torch.nonzero(features.grad.abs().sum(1)[0], as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (7 - convs, 7 + convs)
    assert (cols.min().item(), cols.max().item()) == (7 - convs, 7 + convs)
    with pytest.raises(ValueError, match="at least one"):
        MaskHead(4, convs=0)


def test_lifting_head_maps_bins_onto_the_ranges():
    head = LiftingHead(
        5, num_vertices=7, image_size=(96, 64), hidden=4, bins=17,
        x_range=(-0.5, 1.5), y_range=(-0.5, 1.5), z_range=(-1.0, 1.0),
    ).eval()
    with torch.no_grad():
        for reg in [*head.axes, head.visibility]:
            reg.per_vertex.weight.zero_()
            reg.per_vertex.bias.zero_()
    xyz, vis = head(torch.randn(3, 5))
    # Uniform bins: the middle of each range (x [-32, 96], y [-48, 144], z [-96, 96]).
    torch.testing.assert_close(xyz, torch.tensor([32.0, 48.0, 0.0]).expand(3, 7, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(vis, torch.zeros(3, 7))
    # Bin k of 17 lands on lo + k (hi - lo) / 16: the first and last bins reach the ends.
    for k, x in ((0, -32.0), (4, -32 + 4 * 8.0), (16, 96.0)):
        logits = torch.full((1, 7, 17), -1e4)
        logits[..., k] = 0.0
        assert (head.lo[0] + argsoftmax_1d(logits) * head.step[0])[0, 0].item() == pytest.approx(x)


def test_lifting_head_reaches_what_the_official_fusion_reaches():
    """MeshPoseBranchFusion at its 288 x 384 crop (72 x 96 heatmap, stride 4, 64 bins): a branch
    output X = (soft-argmax bin in 0..63) * 96 / 64 becomes x = 3 * 96 / 64 * X - 96 heatmap px, y = 4 *
    72 / 64 * Y - 72, z = 4 * 72 / 64 * Z - 2 * 72, times 4 for crop px. The ranges are those of
    experiment=paper_meshpose."""
    options = OmegaConf.load(CONFIGS / "experiment" / "paper_meshpose.yaml").meshpose
    h, w, bins = 384, 288, 64
    head = LiftingHead(5, num_vertices=3, image_size=(h, w), hidden=4, bins=bins, x_range=options.x_range,
                       y_range=options.y_range, z_range=options.z_range).eval()
    vw, vh = h // 4, w // 4  # the official code's names for the heatmap's (H, W)

    def official(k: int) -> list[float]:
        c = k * 96 / 64
        return [4 * (3 * vw / 64 * c - vw), 4 * (4 * vh / 64 * c - vh), 4 * (4 * vh / 64 * c - 2 * vh)]

    for k in (0, 21, 63):
        logits = torch.full((1, 3, bins), -1e4)
        logits[..., k] = 0.0
        ours = head.lo + argsoftmax_1d(logits)[..., None] * head.step
        torch.testing.assert_close(ours[0, 0], torch.tensor(official(k)), atol=1e-3, rtol=1e-6)
    # A vertex 1.2 crop widths right of the crop, or a full height below it, is representable.
    assert head.lo[0] < -1.2 * w and head.lo[0] + (bins - 1) * head.step[0] > 2.2 * w
    assert head.lo[1] + (bins - 1) * head.step[1] > 2.0 * h


# ----------------------------------------------------------------------------- UV decoding
def _strip_charts() -> Charts:
    """A 3 x 3 vertex grid (x = col, y = row), 8 triangles: the left column of squares is part 1,
    the right part 2. The middle column is a seam: u = 1 in part 1's chart, u = 0 in part 2's."""
    faces, parts, uvs = [], [], []
    for r in range(2):
        for c in range(2):
            a, b, d, e = 3 * r + c, 3 * r + c + 1, 3 * (r + 1) + c, 3 * (r + 1) + c + 1
            for tri in ((a, b, e), (a, e, d)):
                faces.append(tri)
                parts.append(1 + c)
                uvs.append([[(v % 3) - c, (v // 3) / 2.0] for v in tri])
    return Charts(torch.tensor(faces), torch.tensor(parts), torch.tensor(uvs, dtype=torch.float32))


def test_barycentric_decoding_recovers_face_corner_uvs():
    charts = _strip_charts()
    dec = UVDecoder(charts)
    bary = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [1 / 3, 1 / 3, 1 / 3]])
    for face in range(8):
        q = torch.zeros(3, 9)
        q.scatter_(1, charts.faces[face].expand(3, 3), bary)
        part, uv = dec.decode(q, "barycentric")
        assert (part == charts.face_part[face]).all()
        torch.testing.assert_close(uv, bary @ charts.face_uv[face])


def test_closest_decoding_takes_the_strongest_vertex_uv_in_the_strongest_face():
    charts = _strip_charts()
    dec = UVDecoder(charts)
    face = 2  # first triangle of square (r 0, c 1): vertices (1, 2, 5), part 2
    assert charts.face_part[face] == 2
    assert int(charts.faces[face][0]) == 1  # the strongest vertex: on the seam, u = 0 in part 2, 1 in part 1
    q = torch.zeros(1, 9)
    q[0, charts.faces[face]] = torch.tensor([0.6, 0.2, 0.2])
    part, uv = dec.decode(q, "closest")
    assert int(part) == 2
    torch.testing.assert_close(uv[0], torch.tensor([0.0, 0.0]))
    # The same vertex with its part-1 neighbours reads its part-1 UV.
    face1 = 0  # (0, 1, 4), part 1
    q = torch.zeros(1, 9)
    q[0, charts.faces[face1]] = torch.tensor([0.2, 0.6, 0.2])
    part, uv = dec.decode(q, "closest")
    assert int(part) == 1
    torch.testing.assert_close(uv[0], torch.tensor([1.0, 0.0]))


def test_global_average_decoding_weights_vertex_uvs_in_the_chosen_part():
    charts = _strip_charts()
    dec = UVDecoder(charts)
    bary = torch.tensor([0.5, 0.3, 0.2])
    for face in range(8):
        q = torch.zeros(1, 9)
        q[0, charts.faces[face]] = bary
        part, uv = dec.decode(q, "global_average")
        assert int(part) == int(charts.face_part[face])
        torch.testing.assert_close(uv[0], bary @ charts.face_uv[face])
    # Mass spread over all vertices averages their UVs in part 1: left column u = 0, the seam u = 1
    # (its part-1 UV), the right column has no part-1 corner and falls back to its own UV, u = 1.
    q = torch.full((1, 9), 1 / 9)
    q[0, 0] += 1e-3  # break the face tie towards part 1
    q = q / q.sum()
    part, uv = dec.decode(q, "global_average")
    assert int(part) == 1
    assert uv[0, 0].item() == pytest.approx((0 + 1 + 1) / 3, abs=0.01)


@pytest.mark.parametrize("mode", ["barycentric", "closest", "global_average"])
def test_decode_maps_under_bf16_autocast_equal_float32(mode):
    """Evaluation runs under bf16 autocast on CPUs that have it: every decoding still writes float32."""
    dec = UVDecoder(_strip_charts())
    logits = torch.randn(2, 9, 4, 5, generator=torch.Generator().manual_seed(0))
    fg = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    with torch.autocast("cpu", torch.bfloat16):
        mixed = dec.decode_maps(logits.to(torch.bfloat16), fg, mode)
    torch.testing.assert_close(mixed, dec.decode_maps(logits.to(torch.bfloat16).float(), fg, mode))


def test_decode_maps_keeps_background_zero():
    charts = _strip_charts()
    dec = UVDecoder(charts)
    logits = torch.randn(2, 9, 4, 5)
    fg = torch.zeros(2, 4, 5, dtype=torch.bool)
    fg[0, 1, 2] = fg[1, 3, 4] = True
    iuv = dec.decode_maps(logits, fg, "barycentric")
    assert iuv.shape == (2, 3, 4, 5)
    assert (iuv[:, 0][~fg] == 0).all() and (iuv[:, 0][fg] > 0).all()
    with pytest.raises(ValueError):
        dec.decode(torch.rand(1, 9), "nearest")


# ----------------------------------------------------------------------------- L2D losses
def test_barycentric_ce_is_minimal_at_the_target():
    gen = torch.Generator().manual_seed(0)
    corners = torch.tensor([[2, 5, 7]])
    bary = torch.tensor([[0.5, 0.3, 0.2]])
    target = torch.zeros(1, 10)
    target[0, corners[0]] = bary[0]
    at_target = L.barycentric_cross_entropy(torch.log(target.clamp(min=1e-30)), corners, bary)
    entropy = -(bary * bary.log()).sum()
    assert at_target.item() == pytest.approx(entropy.item(), abs=1e-6)
    others = torch.distributions.Dirichlet(torch.ones(10)).sample((500,))
    ce = torch.stack([L.barycentric_cross_entropy(q.log()[None], corners, bary) for q in others])
    assert (ce > at_target).all()
    # Through a softmax, the gradient w.r.t. the logits is q - target: zero only at the target.
    logits = torch.randn(1, 10, generator=gen, requires_grad=True)
    L.barycentric_cross_entropy(torch.log_softmax(logits, -1), corners, bary).backward()
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach(), -1) - target)


def test_uv_consistency_zero_for_consistent_vertices_and_hand_value():
    gen = torch.Generator().manual_seed(1)
    corner_xy = torch.rand(20, 3, 2, generator=gen) * 64
    bary = torch.distributions.Dirichlet(torch.ones(3)).sample((20,))
    points = (bary[..., None] * corner_xy).sum(1)
    assert L.uv_consistency(points, corner_xy, bary, 64.0).item() == pytest.approx(0.0, abs=1e-6)
    shifted = points + torch.tensor([3.0, 4.0])
    assert L.uv_consistency(shifted, corner_xy, bary, 10.0).item() == pytest.approx(0.5, abs=1e-5)
    assert L.uv_consistency(points[:0], corner_xy[:0], bary[:0], 1.0).item() == 0.0


# ----------------------------------------------------------------------------- LW losses
def test_visibility_labels_hand_case():
    faces = torch.tensor([[[0, 1, 2], [3, 4, 0]]])  # point 2 is padding
    valid = torch.tensor([[True, False]])
    xy = torch.tensor([[[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0], [40.0, 5.0]]])  # vertex 4 outside
    labels, known = L.visibility_labels(faces, valid, xy, torch.tensor([True]), (32, 32))
    assert labels.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0]]
    assert known.tolist() == [[True, True, True, False, True]]
    _, known = L.visibility_labels(faces, valid, xy, torch.tensor([False]), (32, 32))
    assert known.tolist() == [[True, True, True, False, False]]


def test_self_occlusion_hand_case():
    """A square at 2 m in front of a fan of four triangles at 3 m: the fan's centre, behind the square, is
    hidden; the fan's corners (beside the square) and the square's own corners are not; a vertex 3 cm behind
    the surface is within the margin, one outside the crop is never hidden."""
    square = [[8.0, 8.0, 2.0], [24.0, 8.0, 2.0], [24.0, 24.0, 2.0], [8.0, 24.0, 2.0]]
    fan = [[2.0, 2.0, 3.0], [30.0, 2.0, 3.0], [30.0, 30.0, 3.0], [2.0, 30.0, 3.0], [16.0, 16.0, 3.0]]
    extra = [[12.0, 12.0, 2.03], [40.0, 16.0, 3.0]]
    screen = torch.tensor([square + fan + extra])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 8], [5, 6, 8], [6, 7, 8], [7, 4, 8]])
    hidden = L.self_occluded(screen, faces, (32, 32), margin=0.05)
    assert hidden.tolist() == [[False] * 4 + [False] * 4 + [True] + [False, False]]
    # Hidden vertices become known invisible, but an annotation on one of them still wins.
    corners = torch.tensor([[[8, 0, 1]]])
    labels, known = L.visibility_labels(corners, torch.tensor([[True]]), screen[..., :2], torch.tensor([True]),
                                        (32, 32), hidden)
    assert labels[0, 8] == 1.0 and known[0].tolist() == [True, True, False, False, False, False, False, False,
                                                         True, False, True]


def test_visibility_bce_only_on_known_labels():
    logits = torch.tensor([[0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    known = torch.tensor([[True, False, True]])
    expected = (math.log(2.0) + math.log1p(math.exp(2.0))) / 2
    assert L.visibility_bce(logits, labels, known).item() == pytest.approx(expected, abs=1e-6)


def test_distance_transform_matches_scipy():
    gen = torch.Generator().manual_seed(2)
    mask = torch.rand(3, 17, 23, generator=gen) > 0.8
    d2 = L.squared_distance_to(mask)
    for b in range(3):
        ref = ndimage.distance_transform_edt(~mask[b].numpy())
        np.testing.assert_allclose(d2[b].sqrt().numpy(), ref, atol=1e-5)
    sd = L.signed_distance(mask)
    assert (sd[mask] <= 0).all() and (sd[~mask] > 0).all()


def test_rendering_loss_zero_at_the_mask_and_boundary_term_nonnegative():
    mask = torch.zeros(2, 16, 16)
    mask[:, 4:12, 5:10] = 1.0
    assert L.rendering_loss(mask.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        sil = torch.rand(2, 16, 16, generator=gen)
        pure_boundary = L.rendering_loss(sil, mask, boundary_weight=1.0) - ((sil - mask) ** 2).mean()
        assert pure_boundary.item() >= 0
    # Gradient pushes the silhouette up inside and down outside.
    sil = torch.full((1, 16, 16), 0.5, requires_grad=True)
    L.rendering_loss(sil, mask[:1]).backward()
    assert (sil.grad[0][mask[0] > 0] < 0).all() and (sil.grad[0][mask[0] == 0] > 0).all()


# ----------------------------------------------------------------------------- L3D losses
def _rotation(axis: str, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def test_vertex_and_joint_distances_hand_values():
    pred = torch.zeros(1, 4, 3)
    target = pred.clone()
    target[0, 1] = torch.tensor([3.0, 4.0, 0.0])
    assert L.vertex_l2(pred, target, 2.0).item() == pytest.approx(5.0 / 4 / 2)
    weight = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    assert L.joint_distance(pred, target, weight, 1.0).item() == pytest.approx(10.0 / 3)
    assert L.joint_distance(pred, target, weight * 0, 1.0).item() == 0.0


def test_edge_and_normal_losses_are_rigid_invariant():
    gen = torch.Generator().manual_seed(4)
    verts = torch.randn(1, 6, 3, generator=gen)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [3, 4, 5], [1, 4, 2]])
    edges = L.mesh_edges(faces)
    assert edges.shape[0] == 10  # 12 sides, two shared: (0, 2) and (1, 2)
    moved = verts @ _rotation("y", 0.7).T + torch.tensor([1.0, -2.0, 3.0])
    assert L.edge_length(moved, verts, edges, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    assert L.edge_length(2 * verts, verts, edges, 4.0).item() == pytest.approx(
        (verts[0, edges[:, 0]] - verts[0, edges[:, 1]]).norm(dim=-1).mean().item() / 4, rel=1e-5
    )
    assert L.normal_cosine(moved, moved * 3.0, faces).item() == pytest.approx(0.0, abs=1e-5)
    flat = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    flipped = flat @ _rotation("x", math.pi).T
    tri = torch.tensor([[0, 1, 2]])
    assert L.normal_cosine(flipped, flat, tri).item() == pytest.approx(2.0, abs=1e-5)


def test_empty_selections_are_graph_connected_zeros():
    x = torch.randn(0, 5, 3, requires_grad=True)
    for value in (L.vertex_l2(x, x, 1.0), L.normal_cosine(x, x, torch.tensor([[0, 1, 2]]))):
        assert value.item() == 0.0 and value.requires_grad
    logits = torch.randn(2, 5, requires_grad=True)
    loss = L.visibility_bce(logits, torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_vertexpose_heatmaps_are_its_1x1_convolution_in_nchw_layout(layout):
    """The heatmap product equals the 1x1 convolution of its weights and comes out (B, v, h, w)
    contiguous from features in either layout (the layout the softmax and grid_sample read)."""
    from densehmr.nn.heads.vertexpose import VertexPoseHead

    torch.manual_seed(0)
    head = VertexPoseHead(8, 5, stride=4, gain=10.0, learn_gain=False).to(memory_format=layout)
    features = torch.randn(2, 8, 6, 7).contiguous(memory_format=layout)
    heatmaps, xy = head(features)
    assert heatmaps.is_contiguous()
    torch.testing.assert_close(heatmaps, head.heatmap(features), atol=1e-5, rtol=0)
    torch.testing.assert_close(xy, argsoftmax_2d(head.heatmap(features), 10.0) * 4, atol=1e-4, rtol=0)
