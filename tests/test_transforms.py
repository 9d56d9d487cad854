"""Crop geometry, flips and rotations against independent computations, on a small mirror-symmetric body."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from datamodules.crop import apply_affine, crop_affine, invert_affine, padded_box, warp
from datamodules.dataset import DenseHMRDataset
from datamodules.readers import BodyTarget, DensePoints, RawSample
from datamodules.transforms import AugmentConfig, AugmentParams, PelvisModel, flip_sample
from densehmr.body.assets import NUM_PARTS, PART_MIRROR, SMPL24_MIRROR, Body, Charts, GeodesicEval, LowPoly

GRID = 3  # vertices per side of each part's square chart
SCALE = 0.1  # metres per chart unit
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPLX_VERTEX_NAMES = (
    "nose reye leye rear lear LBigToe LSmallToe LHeel RBigToe RSmallToe RHeel "
    "lthumb lindex lmiddle lring lpinky rthumb rindex rmiddle rring rpinky"
).split()


def surface_point(part: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(P, 3) point of the fake body at DensePose (part, U, V): each part a flat square, a part and its
    mirror part reflections of each other through x = 0 (self-mirrored parts straddle it)."""
    part, u, v = np.asarray(part), np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    mirror = np.asarray(PART_MIRROR)[part]
    self_mirrored = mirror == part
    side = np.where(part < mirror, 1.0, -1.0)
    x = np.where(self_mirrored, u - 0.5, side * (0.6 + u))
    z = np.where(self_mirrored, part, 10 + np.minimum(part, mirror))
    return SCALE * np.stack([x, v, z.astype(np.float64)], axis=-1)


def _vertex(part: int, i: int, j: int) -> int:
    return (part - 1) * GRID * GRID + i * GRID + j


def fake_body(directory: Path) -> Body:
    """A 24-part charted, mirror-symmetric body with a 24-joint SMPL-layout model file that smplx loads."""
    n = GRID - 1
    verts, mirror, faces, face_part, face_uv = [], [], [], [], []
    for p in range(1, NUM_PARTS + 1):
        q = PART_MIRROR[p]
        for i in range(GRID):
            for j in range(GRID):
                verts.append(surface_point(p, i / n, j / n))
                mirror.append(_vertex(p, n - i, j) if q == p else _vertex(q, i, j))
        for i in range(n):
            for j in range(n):
                for tri in (((i, j), (i + 1, j), (i + 1, j + 1)), ((i, j), (i + 1, j + 1), (i, j + 1))):
                    faces.append([_vertex(p, a, b) for a, b in tri])
                    face_part.append(p)
                    face_uv.append([[a / n, b / n] for a, b in tri])
    verts = np.asarray(verts)
    mirror = np.asarray(mirror)
    num_verts = len(verts)

    # Joints: self-mirrored ones at the midpoint of a mirrored vertex pair, the others on mirrored vertices.
    regressor = np.zeros((24, num_verts))
    self_joints = [j for j in range(24) if SMPL24_MIRROR[j] == j]
    for k, joint in enumerate(self_joints):
        a = _vertex(1 + k // GRID, 0, GRID - 1 - k % GRID)  # the pelvis off the z axis, so Rz moves it
        regressor[joint, [a, mirror[a]]] = 0.5
    pair_parts = [p for p in range(1, NUM_PARTS + 1) if PART_MIRROR[p] > p]
    paired = [j for j in range(24) if SMPL24_MIRROR[j] > j]
    for k, joint in enumerate(paired):
        a = _vertex(pair_parts[k], 1, 1)
        regressor[joint, a] = 1.0
        regressor[SMPL24_MIRROR[joint], mirror[a]] = 1.0
    weights = np.zeros((num_verts, 24))
    for p in range(1, NUM_PARTS + 1):
        q = PART_MIRROR[p]
        if q == p:
            joint = self_joints[(p - 1) * 3]
        else:
            joint = paired[pair_parts.index(min(p, q)) % len(paired)]
            joint = joint if p < q else SMPL24_MIRROR[joint]
        weights[(p - 1) * GRID * GRID : p * GRID * GRID, joint] = 1.0
    rng = np.random.default_rng(0)
    shapedirs = rng.normal(scale=0.01, size=(num_verts, 3, 10))
    shapedirs = 0.5 * (shapedirs + shapedirs[mirror] * np.array([-1.0, 1.0, 1.0])[None, :, None])
    kintree = np.array([[2**32 - 1] + SMPL_PARENTS[1:], list(range(24))], dtype=np.int64)
    model = {
        "v_template": verts,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((num_verts, 3, 207)),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": np.asarray(faces, dtype=np.int64),
    }
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / "fake_smpl.pkl"
    with open(model_file, "wb") as f:
        pickle.dump(model, f)

    charts = Charts(
        faces=torch.tensor(faces, dtype=torch.long),
        face_part=torch.tensor(face_part, dtype=torch.long),
        face_uv=torch.tensor(face_uv, dtype=torch.float32),
    )
    grid = np.arange(256) / 255.0
    uu, vv = np.meshgrid(grid, grid)  # [row = V, col = U]
    table = np.zeros((NUM_PARTS, 256, 256, 2), dtype=np.float32)
    for p in range(1, NUM_PARTS + 1):
        table[p - 1, ..., 0] = 1.0 - uu if PART_MIRROR[p] == p else uu
        table[p - 1, ..., 1] = vv
    num_faces = len(faces)
    lowpoly = LowPoly(
        charts=charts,
        full_face=torch.arange(num_verts) % num_faces,
        full_bary=torch.full((num_verts, 3), 1 / 3),
        upsampler=torch.eye(num_verts),
        mirror=torch.from_numpy(mirror),
        landmarkers={},
    )
    geodesic = GeodesicEval(
        point_part=torch.zeros(0, dtype=torch.long),
        point_uv=torch.zeros(0, 2),
        point_face=torch.zeros(0, dtype=torch.long),
        point_bary=torch.zeros(0, 3),
        pdist=torch.zeros(0),
        transform=torch.zeros(0, dtype=torch.long),
        mean_geodesic=torch.ones(9),
        coarse_parts=torch.zeros(25, dtype=torch.long),
    )
    return Body(
        name="fake",
        model_file=model_file,
        vertex_ids={name: 0 for name in SMPLX_VERTEX_NAMES},
        v_template=torch.tensor(verts, dtype=torch.float32),
        charts=charts,
        parents=torch.tensor(SMPL_PARENTS),
        regressors={
            "smpl24": torch.tensor(regressor, dtype=torch.float32),
            # COCO-17 on SMPL joints: the head for the face points, then shoulders ... ankles, left first.
            "coco17": torch.tensor(
                regressor[[15] * 5 + [16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]], dtype=torch.float32
            ),
            # H36M-17 on SMPL joints: pelvis, right leg, left leg, spine, neck, head x 2, left arm, right arm.
            "h36m17": torch.tensor(
                regressor[[0, 2, 5, 8, 1, 4, 7, 3, 12, 15, 15, 16, 18, 20, 17, 19, 21]], dtype=torch.float32
            ),
        },
        mirror=torch.from_numpy(mirror),
        uv_symmetry=torch.from_numpy(table),
        lowpoly=lowpoly,
        downsample=[],
        geodesic=geodesic,
    )


@pytest.fixture(scope="module")
def toy_body(tmp_path_factory) -> Body:
    return fake_body(tmp_path_factory.mktemp("fake_body"))


@pytest.fixture(scope="module")
def smpl_model(toy_body):
    return smplx.SMPL(model_path=str(toy_body.model_file), vertex_ids=toy_body.vertex_ids, num_betas=10)


def _project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = points @ K.T
    return p[:, :2] / p[:, 2:]


def _person(rng: np.random.Generator, smpl_model, n_points: int = 40) -> tuple[RawSample, np.ndarray]:
    """A posed person of the fake body seen by a pinhole camera, with dense points, keypoints and joints."""
    pose = rng.normal(scale=0.3, size=72).astype(np.float32)
    betas = rng.normal(size=10).astype(np.float32)
    K = np.array([[600.0, 0.0, 330.0], [0.0, 600.0, 235.0], [0.0, 0.0, 1.0]])
    cam_t = np.array([0.05, -0.1, 4.0])
    joints3d = np.concatenate([rng.normal(scale=0.3, size=(17, 3)) + cam_t, np.ones((17, 1))], 1)
    verts = _smpl_verts(smpl_model, pose, betas) + cam_t
    px = _project(K, verts)
    lo, hi = px.min(0), px.max(0)
    part = rng.integers(1, NUM_PARTS + 1, size=n_points)
    dense = DensePoints(
        x=rng.uniform(lo[0], hi[0], n_points),
        y=rng.uniform(lo[1], hi[1], n_points),
        part=part,
        u=rng.uniform(0, 1, n_points).astype(np.float32),
        v=rng.uniform(0, 1, n_points).astype(np.float32),
    )
    keypoints = np.concatenate([px[:17], rng.integers(0, 3, size=(17, 1))], 1).astype(np.float32)
    raw = RawSample(
        source="memory",
        image_path=Path("unused.jpg"),
        image_size=(480, 640),
        image_id=3,
        ann_id=7,
        bbox=np.concatenate([lo, hi - lo]),
        area=float(np.prod(hi - lo) / 2),
        keypoints=keypoints,
        dense=dense,
        dp_masks=None,
        segmentation=[[lo[0], lo[1], hi[0], lo[1], hi[0], hi[1], lo[0], hi[1]]],
        body=BodyTarget(pose=pose, betas=betas, joints3d=joints3d.astype(np.float32), cam_K=K, cam_t=cam_t),
    )
    return raw, verts


@torch.no_grad()
def _smpl_verts(model, pose: np.ndarray, betas: np.ndarray) -> np.ndarray:
    out = model(
        global_orient=torch.as_tensor(pose[None, :3], dtype=torch.float32),
        body_pose=torch.as_tensor(pose[None, 3:], dtype=torch.float32),
        betas=torch.as_tensor(betas[None], dtype=torch.float32),
    )
    return out.vertices[0].double().numpy()


def _dataset(body: Body, size=(96, 80)) -> DenseHMRDataset:
    return DenseHMRDataset([], body, size, augment=AugmentConfig(), on_bad_sample="raise")


def _image(rng) -> np.ndarray:
    return rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)


def test_box_centre_maps_to_crop_centre_and_affine_maps_back():
    bbox = np.array([100.0, 50.0, 40.0, 120.0])
    center, box_wh = padded_box(bbox, (128, 96))
    assert np.allclose(box_wh, np.array([90.0, 120.0]) * 1.2)  # aspect 96/128 kept, box padded 1.2
    for rotation, flip in ((0.0, False), (33.0, False), (-20.0, True)):
        affine = crop_affine(center, box_wh, (128, 96), rotation, flip)
        assert np.allclose(apply_affine(affine, center), [48.0, 64.0])
        points = np.random.default_rng(0).uniform(0, 200, size=(10, 2))
        assert np.allclose(apply_affine(invert_affine(affine), apply_affine(affine, points)), points)
    corners = apply_affine(crop_affine(center, box_wh, (128, 96)), bbox[:2] + np.array([[0, 0], [40, 120]]))
    assert np.allclose(corners[1] - corners[0], [40 * 96 / 108, 120 * 128 / 144])


def test_warp_samples_the_image_where_the_affine_says():
    """Crop pixel centres, mapped back by the affine, land on the same colour in the image (bilinear)."""
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float64)
    image = (0.5 * xx + 0.3 * yy).astype(np.float32)  # linear, so bilinear sampling is exact
    affine = crop_affine(np.array([150.0, 90.0]), np.array([60.0, 80.0]), (40, 30), rotation_deg=17.0)
    crop = warp(image, affine, (40, 30))
    rows, cols = np.mgrid[0:40, 0:30]
    centres = np.stack([cols + 0.5, rows + 0.5], -1).reshape(-1, 2)
    back = apply_affine(invert_affine(affine), centres) - 0.5  # continuous -> pixel-index coordinates
    assert np.allclose(crop.reshape(-1), 0.5 * back[:, 0] + 0.3 * back[:, 1], atol=2e-2)


def test_crop_sample_geometry(toy_body, smpl_model):
    rng = np.random.default_rng(1)
    raw, _ = _person(rng, smpl_model)
    dataset = _dataset(toy_body)
    sample = dataset.build(raw, _image(rng), AugmentParams())
    to_image = sample["affine"].double().numpy()
    kp = sample["kp2d"].double().numpy()
    assert np.allclose(apply_affine(to_image, kp[:, :2]), raw.keypoints[:, :2], atol=1e-3)
    assert np.allclose(
        apply_affine(to_image, sample["dp_xy"].double().numpy()), np.c_[raw.dense.x, raw.dense.y], atol=1e-3
    )
    # The box is centred and fills the crop's width / 1.2 or its height / 1.2, whichever binds.
    x, y, w, h = sample["bbox"].tolist()
    assert np.allclose([x + w / 2, y + h / 2], [40.0, 48.0], atol=1e-3)
    assert max(w / 80, h / 96) == pytest.approx(1 / 1.2, abs=1e-4)
    s2 = (w * h) / (raw.bbox[2] * raw.bbox[3])
    assert float(sample["area"]) == pytest.approx(raw.area * s2, rel=1e-4)
    # The polygon segmentation is the box: the mask covers the box in the crop.
    mask = sample["mask"].numpy()
    inside = mask[int(y) + 2 : int(y + h) - 2, int(x) + 2 : int(x + w) - 2]
    assert inside.all() and mask.sum() == pytest.approx(w * h, rel=0.1)


@pytest.mark.parametrize("flip", [False, True])
def test_scene_moves_with_the_crop(toy_body, smpl_model, flip):
    """SMPL vertices + cam_t projected with the crop's cam_K land where the original projection lands
    through the crop affine, after rotation and flip (vertex order mirrored by the flip)."""
    rng = np.random.default_rng(2)
    raw, verts = _person(rng, smpl_model)
    params = AugmentParams(scale=1.15, rotation=25.0, shift=(0.05, -0.04), flip=flip)
    sample = _dataset(toy_body).build(raw, _image(rng), params)
    to_crop = invert_affine(sample["affine"].double().numpy())
    expected = apply_affine(to_crop, _project(raw.body.cam_K, verts))
    pose = torch.cat([sample["global_orient"], sample["body_pose"]]).numpy()
    new_verts = _smpl_verts(smpl_model, pose, sample["betas"].numpy()) + sample["cam_t"].double().numpy()
    got = _project(sample["cam_K"].double().numpy(), new_verts)
    if flip:
        got = got[toy_body.mirror.numpy()]
    assert np.abs(got - expected).max() < 0.02  # crop px
    assert np.allclose(sample["betas"].numpy(), raw.body.betas)
    # 3D joints move the same way as the vertices.
    joints = sample["kp3d"].double().numpy()
    order = np.asarray([0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13]) if flip else np.arange(17)
    expected_j = apply_affine(to_crop, _project(raw.body.cam_K, raw.body.joints3d[:, :3].astype(np.float64)))
    assert np.abs(_project(sample["cam_K"].double().numpy(), joints[:, :3])[order] - expected_j).max() < 0.02


def test_unrotated_crop_intrinsics_are_the_affine_applied_to_K(toy_body, smpl_model):
    rng = np.random.default_rng(3)
    raw, _ = _person(rng, smpl_model)
    sample = _dataset(toy_body).build(raw, _image(rng), AugmentParams(scale=0.9, shift=(0.1, 0.0)))
    to_crop = invert_affine(sample["affine"].double().numpy())
    K = raw.body.cam_K
    s = to_crop[0, 0]
    expected = np.array(
        [[s * K[0, 0], 0, s * K[0, 2] + to_crop[0, 2]], [0, s * K[1, 1], s * K[1, 2] + to_crop[1, 2]], [0, 0, 1]]
    )
    assert np.allclose(sample["cam_K"].double().numpy(), expected, atol=1e-3)
    assert np.allclose(sample["cam_t"].numpy(), raw.body.cam_t, atol=1e-6)


def test_flipped_dense_points_land_on_the_mirrored_surface(toy_body, smpl_model):
    rng = np.random.default_rng(4)
    raw, _ = _person(rng, smpl_model, n_points=200)
    image = _image(rng)
    dataset = _dataset(toy_body)
    plain = dataset.build(raw, image, AugmentParams())
    flipped = dataset.build(raw, image, AugmentParams(flip=True))
    width = plain["image"].shape[-1]
    assert torch.allclose(flipped["dp_xy"][:, 0], width - plain["dp_xy"][:, 0])
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    before = surface_point(plain["dp_I"].numpy(), plain["dp_U"].numpy(), plain["dp_V"].numpy())
    after = surface_point(flipped["dp_I"].numpy(), flipped["dp_U"].numpy(), flipped["dp_V"].numpy())
    assert np.abs(after - before * np.array([-1.0, 1.0, 1.0])).max() < SCALE * 1.0 / 255
    # Face + barycentrics on the mesh give the same surface points.
    verts, faces = toy_body.v_template.double(), toy_body.faces
    for sample, points in ((plain, before), (flipped, after)):
        corners = verts[faces[sample["dp_face"]]]
        on_mesh = (sample["dp_bary"].double()[..., None] * corners).sum(1).numpy()
        assert np.abs(on_mesh - points).max() < 1e-5


def test_flip_twice_is_identity_on_all_keys(toy_body, smpl_model):
    rng = np.random.default_rng(5)
    raw, _ = _person(rng, smpl_model)
    dataset = _dataset(toy_body)
    sample = dataset.build(raw, _image(rng), AugmentParams(rotation=12.0, scale=1.1))
    once = flip_sample(sample, toy_body, dataset.face_mappers, dataset.pelvis)
    twice = flip_sample(once, toy_body, dataset.face_mappers, dataset.pelvis)
    assert twice.keys() == sample.keys()
    # The UV flip table has 1/255 resolution: UVs move by at most that, barycentrics by ~2x on a half-unit
    # face, and a point on a face edge may change face.
    same_face = (twice["dp_face"] == sample["dp_face"]) & (twice["dp_face_low"] == sample["dp_face_low"])
    assert same_face.float().mean() > 0.95
    for key, value in sample.items():
        if key in ("dp_face", "dp_face_low"):
            continue
        got = twice[key]
        if key in ("dp_bary", "dp_bary_low"):
            assert torch.allclose(got[same_face], value[same_face], atol=0.01), key
        elif value.is_floating_point():
            assert torch.allclose(got, value, atol=1.0 / 255 if key in ("dp_U", "dp_V") else 1e-4), key
        else:
            assert torch.equal(got, value), key
    assert not torch.equal(once["image"], sample["image"])


def test_pelvis_model_matches_smplx(toy_body, smpl_model):
    betas = np.random.default_rng(6).normal(size=10).astype(np.float32)
    with torch.no_grad():
        out = smpl_model(betas=torch.from_numpy(betas[None]))
    assert np.allclose(PelvisModel.from_body(toy_body)(betas), out.joints[0, 0].double().numpy(), atol=1e-5)


def test_random_augmentation_keeps_labels_consistent(toy_body, smpl_model):
    """With random draws (photometric, occlusion included) keypoints still map back through the affine."""
    rng = np.random.default_rng(7)
    raw, _ = _person(rng, smpl_model)
    dataset = _dataset(toy_body)
    for i in range(5):
        params = AugmentParams(scale=1.2, rotation=10.0 * i, flip=bool(i % 2), occlude=True, photometric=True)
        sample = dataset.build(raw, _image(rng), params)
        kp = sample["kp2d"].double().numpy()
        order = np.asarray([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]) if params.flip else np.arange(17)
        back = apply_affine(sample["affine"].double().numpy(), kp[:, :2])
        assert np.allclose(back[order], raw.keypoints[:, :2], atol=1e-3)
        assert sample["image"].shape == (3, 96, 80) and torch.isfinite(sample["image"]).all()
