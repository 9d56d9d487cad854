"""The synthetic benchmark generator: its files re-read through the real readers, and its annotations
checked against an independent re-render of the bodies from the SPIN npz parameters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from datamodules.errors import BadSampleLog
from datamodules.readers import DensePoseCocoReader, SpinNpz
from datamodules.readers.densepose_coco import rle_to_mask
from datamodules.synthetic import annotations as ann
from datamodules.synthetic import generate
from datamodules.synthetic.appearance import MATERIALS, Landmarks, material_index
from datamodules.synthetic.generator import SyntheticGenerator, facing_normals
from datamodules.synthetic.poses import (
    KEY_POSES,
    LIMITS,
    euler_to_axis_angle,
    mirror_axis_angle,
    sample_pose,
)
from densehmr.body.assets import FINE_TO_MASK14
from densehmr.body.smpl_layout import make_smplx
from densehmr.render import PerspectiveCamera, rasterize, render_iuv

SIZE = 160
NUM = 6
SEED = 3


@pytest.fixture(scope="module")
def open_body():
    from densehmr.body import load_body

    return load_body("open")


@pytest.fixture(scope="module")
def smpl(open_body):
    return make_smplx(open_body.model_file, open_body.vertex_ids)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, open_body):
    out = tmp_path_factory.mktemp("synthetic")
    manifest = generate(out, "val", NUM, SIZE, SEED, body=open_body, shard_size=4, progress=False)
    coco = json.loads((out / "densepose_val.json").read_text())
    with np.load(out / "smpl_val.npz") as data:
        rows = {k: data[k] for k in data.files}
    return out, manifest, coco, rows


def _pose_rows(smpl, rows: dict[str, np.ndarray], select: np.ndarray) -> torch.Tensor:
    """Camera-frame vertices (n, V, 3) of npz rows `select`: SMPL-format parameters plus cam_t."""
    t = lambda x: torch.as_tensor(x[select], dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = smpl(
            betas=t(rows["shape"]),
            body_pose=t(rows["pose"])[:, 3:],
            global_orient=t(rows["pose"])[:, :3],
            transl=torch.zeros(len(select), 3),
        )
    return out.vertices + t(rows["cam_t"])[:, None]


def _rerender(open_body, smpl, rows, select):
    """Each selected person rendered alone from the npz: fragments, (I, U, V) and the vertices."""
    verts = _pose_rows(smpl, rows, select)
    k = torch.as_tensor(rows["cam_K"][select], dtype=torch.float32)
    camera = PerspectiveCamera(focal=k[:, [0, 1], [0, 1]], principal=k[:, :2, 2])
    frags = rasterize(camera.to_screen(verts), open_body.faces, (SIZE, SIZE), perspective_correct=True)
    return frags, render_iuv(frags, open_body.charts), verts


def _by_image(coco, rows):
    anns = {a["id"]: a for a in coco["annotations"]}
    for image in coco["images"]:
        select = np.flatnonzero(rows["imgname"] == image["file_name"])
        yield image, select, [anns[int(i)] for i in rows["ann_id"][select]]


def test_manifest_counts_and_checksums(dataset):
    out, manifest, coco, rows = dataset
    assert manifest["counts"]["images"] == len(coco["images"]) == NUM
    assert manifest["counts"]["annotations"] == len(coco["annotations"]) == len(rows["ann_id"])
    assert manifest["counts"]["dense_points"] == sum(len(a.get("dp_I", [])) for a in coco["annotations"])
    assert len(manifest["files"]) == NUM + 2
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert not (out / ".shards").exists()
    assert sorted(rows["ann_id"].tolist()) == sorted(a["id"] for a in coco["annotations"])


def test_files_load_through_the_readers(dataset):
    out, _, coco, _ = dataset
    log = BadSampleLog("raise")
    reader = DensePoseCocoReader(
        out / "densepose_val.json", out / "images", log, smpl=SpinNpz(out / "smpl_val.npz", log)
    )
    assert len(reader) == len(coco["annotations"])
    with_dense = 0
    for i in range(len(reader)):
        raw = reader.raw(i)
        assert raw.image_path.is_file() and raw.body is not None and raw.body.pose is not None
        if raw.dense is not None:
            with_dense += 1
            x, y, w, h = raw.bbox
            assert (
                (raw.dense.x > x) & (raw.dense.x < x + w) & (raw.dense.y > y) & (raw.dense.y < y + h)
            ).all()
    assert with_dense >= NUM // 2


def test_dense_points_carry_the_rendered_iuv(dataset, open_body, smpl):
    """Every point's (I, U, V) is what an independent re-render from the npz shows at its pixel."""
    _, _, coco, rows = dataset
    total = failed = 0
    for _, select, anns in _by_image(coco, rows):
        _, (part, u, v), _ = _rerender(open_body, smpl, rows, select)
        for k, a in enumerate(anns):
            if "dp_I" not in a:
                continue
            x, y, w, h = a["bbox"]
            col = np.floor(x + np.asarray(a["dp_x"]) / 256 * w).astype(int)
            row = np.floor(y + np.asarray(a["dp_y"]) / 256 * h).astype(int)
            ok = part[k, row, col].numpy() == np.asarray(a["dp_I"])
            ok &= np.abs(u[k, row, col].numpy() - np.asarray(a["dp_U"])) < 2e-3
            ok &= np.abs(v[k, row, col].numpy() - np.asarray(a["dp_V"])) < 2e-3
            assert 60 <= len(ok) <= ann.POINTS_RANGE[1]
            total += len(ok)
            failed += int((~ok).sum())
    print(f"IUV check: {failed} of {total} points failed ({failed / max(total, 1):.4%})")
    assert total > 0 and failed / total <= 0.002


def test_keypoints_are_projected_joints(dataset, open_body, smpl):
    _, _, coco, rows = dataset
    checked = 0
    for _, select, anns in _by_image(coco, rows):
        frags, _, verts = _rerender(open_body, smpl, rows, select)
        joints = torch.einsum("jv,pvc->pjc", open_body.regressors["coco17"], verts).numpy()
        k = rows["cam_K"][select]
        proj = np.einsum("pij,pkj->pki", k, joints)
        xy = proj[..., :2] / proj[..., 2:]
        for p, a in enumerate(anns):
            kp = np.asarray(a["keypoints"]).reshape(17, 3)
            np.testing.assert_array_equal(kp, rows["part"][select[p]].round(2))
            inside = (joints[p, :, 2] > ann.NEAR_PLANE) & (xy[p] >= 0).all(1) & (xy[p] < SIZE).all(1)
            np.testing.assert_array_equal(kp[:, 2] > 0, inside)
            np.testing.assert_allclose(kp[inside, :2], xy[p, inside], atol=0.01)
            # A visible keypoint is not behind its own body's surface by more than its slack.
            vis = np.flatnonzero(kp[:, 2] == 2)
            col, row = np.floor(xy[p, vis]).astype(int).T
            z_surface = frags.zbuf[p, row, col].numpy()
            assert (z_surface >= joints[p, vis, 2] - ann.KEYPOINT_DEPTH_SLACK[vis] - 1e-4).all()
            checked += len(vis)
            # H36M joints in S come from the same camera-frame body.
            h36m = torch.einsum("jv,vc->jc", open_body.regressors["h36m17"], verts[p]).numpy()
            np.testing.assert_allclose(rows["S"][select[p], :, :3], h36m, atol=1e-4)
    assert checked > 0


def test_dp_masks_agree_with_the_rendered_parts(dataset, open_body, smpl):
    """Decoded masks, zoomed back onto the image: a masked pixel shows that coarse part in the re-render,
    and the masks together are the person's segmentation."""
    _, _, coco, rows = dataset
    to_mask14 = np.asarray(FINE_TO_MASK14)
    agree = total = 0
    for _, select, anns in _by_image(coco, rows):
        _, (part, _, _), _ = _rerender(open_body, smpl, rows, select)
        for k, a in enumerate(anns):
            if "dp_masks" not in a:
                continue
            x, y, w, h = (int(c) for c in a["bbox"])
            grid = np.zeros((256, 256), dtype=np.int64)
            for m, rle in enumerate(a["dp_masks"], start=1):
                if rle:
                    grid[rle_to_mask(rle) > 0] = m
            # Each image pixel of the box reads the grid cell under its centre (the readers' zoom).
            cy = np.floor((np.arange(h) + 0.5) / h * 256).astype(int)
            cx = np.floor((np.arange(w) + 0.5) / w * 256).astype(int)
            labels = grid[cy][:, cx]
            rendered = to_mask14[part[k, y : y + h, x : x + w].numpy()]
            on = labels > 0
            agree += int((labels[on] == rendered[on]).sum())
            total += int(on.sum())
            segmentation = rle_to_mask(a["segmentation"])[y : y + h, x : x + w] > 0
            assert (on == segmentation).mean() > 0.99
    assert total > 0 and agree / total > 0.995


def test_generation_is_deterministic_and_resumes(dataset, open_body, tmp_path, monkeypatch):
    _, manifest, _, _ = dataset
    calls = {"n": 0}
    original = SyntheticGenerator.sample

    def interrupted(self, index):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(SyntheticGenerator, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, "val", NUM, SIZE, SEED, body=open_body, shard_size=4, progress=False)
    assert (tmp_path / ".shards" / "val" / "shard_00000.json").is_file()
    assert not (tmp_path / "manifest_val.json").exists()
    monkeypatch.setattr(SyntheticGenerator, "sample", original)
    calls["n"] = 0
    resumed = generate(tmp_path, "val", NUM, SIZE, SEED, body=open_body, shard_size=4, progress=False)
    assert resumed == manifest
    again = generate(tmp_path, "val", NUM, SIZE, SEED, body=open_body, shard_size=4, progress=False)
    assert again == manifest


def test_splits_of_one_seed_differ(open_body):
    a = SyntheticGenerator(open_body, 64, 0, "train").sample(0).image
    b = SyntheticGenerator(open_body, 64, 0, "val").sample(0).image
    assert not np.array_equal(a, b)


def test_euler_convention_matches_explicit_matrices():
    rng = np.random.default_rng(0)
    euler = rng.uniform(-170, 170, (5, 24, 3))
    rotvec = euler_to_axis_angle(euler).reshape(5, 24, 3)
    x, y, z = np.deg2rad(euler).transpose(2, 0, 1)
    c, s = np.cos, np.sin
    one, zero = np.ones_like(x), np.zeros_like(x)
    rx = np.stack([one, zero, zero, zero, c(x), -s(x), zero, s(x), c(x)], -1).reshape(5, 24, 3, 3)
    ry = np.stack([c(y), zero, s(y), zero, one, zero, -s(y), zero, c(y)], -1).reshape(5, 24, 3, 3)
    rz = np.stack([c(z), -s(z), zero, s(z), c(z), zero, zero, zero, one], -1).reshape(5, 24, 3, 3)
    np.testing.assert_allclose(
        Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(5, 24, 3, 3), rx @ ry @ rz, atol=1e-9
    )


def test_sampled_poses_respect_joint_limits():
    rng = np.random.default_rng(1)
    for _ in range(300):
        euler = sample_pose(rng).euler
        assert ((euler >= LIMITS[..., 0] - 1e-9) & (euler <= LIMITS[..., 1] + 1e-9)).all()
    for name, euler in KEY_POSES.items():
        assert ((euler >= LIMITS[..., 0]) & (euler <= LIMITS[..., 1])).all(), name


def _joints(smpl, euler: np.ndarray) -> np.ndarray:
    """SMPL joints (24, 3) of a key pose, rest frame (y up, facing +z), mean shape."""
    pose = torch.as_tensor(euler_to_axis_angle(euler[None]), dtype=torch.float32)
    with torch.no_grad():
        out = smpl(
            body_pose=pose[:, 3:],
            global_orient=pose[:, :3],
            betas=torch.zeros(1, 10),
            transl=torch.zeros(1, 3),
        )
    return out.joints[0, :24].numpy()


def test_key_poses_look_like_their_names(smpl):
    """Hand-checkable geometry of a few key poses: the joint conventions in poses.py are right."""
    j = {name: _joints(smpl, euler) for name, euler in KEY_POSES.items()}
    y, z = 1, 2
    head, l_hip, l_knee, l_ankle, l_shoulder, l_wrist, r_wrist = 15, 1, 4, 7, 16, 20, 21
    stand = j["stand"]
    assert stand[l_wrist, y] < stand[l_shoulder, y] - 0.3  # arms hang
    sit = j["sit_chair"]
    assert (
        sit[l_knee, z] > sit[l_hip, z] + 0.3 and abs(sit[l_knee, y] - sit[l_hip, y]) < 0.12
    )  # thigh forward
    assert sit[l_ankle, y] < sit[l_knee, y] - 0.3  # shin down
    up = j["arms_up"]
    assert up[l_wrist, y] > up[head, y] and up[r_wrist, y] > up[head, y]
    run = j["run"]
    assert run[l_knee, z] > run[l_hip, z] + 0.15  # the leading thigh swings forward
    selfie = j["selfie"]
    assert selfie[l_wrist, z] > selfie[l_shoulder, z] + 0.3 and selfie[l_wrist, y] > selfie[l_shoulder, y]


def test_mirrored_pose_gives_the_mirrored_body(open_body, smpl):
    rng = np.random.default_rng(2)
    pose = euler_to_axis_angle(np.stack([sample_pose(rng).euler for _ in range(4)]))
    t = lambda p: torch.as_tensor(p, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        a = smpl(
            body_pose=t(pose[:, 3:]),
            global_orient=t(pose[:, :3]),
            betas=torch.zeros(4, 10),
            transl=torch.zeros(4, 3),
        ).vertices
        m = mirror_axis_angle(pose)
        b = smpl(
            body_pose=t(m[:, 3:]),
            global_orient=t(m[:, :3]),
            betas=torch.zeros(4, 10),
            transl=torch.zeros(4, 3),
        ).vertices
    flipped = a[:, open_body.mirror] * torch.tensor([-1.0, 1.0, 1.0])
    rest = open_body.v_template[open_body.mirror] * torch.tensor([-1.0, 1.0, 1.0])
    rest_error = (rest - open_body.v_template).norm(dim=-1).max()
    assert (flipped - b).norm(dim=-1).max() < rest_error + 0.02


def test_keypoint_visibility_hand_solved():
    size, focal = 8, 8.0
    zbuf = np.full((size, size), np.inf)
    owner = np.full((size, size), -1)
    occluder = np.zeros((size, size), bool)
    joints = np.zeros((17, 3))
    joints[:, 2] = 2.0
    # Joint 0 at pixel (4, 4) with the surface 5 cm in front: visible. Joint 5 (shoulder, slack 0.15)
    # at pixel (5, 5) behind a surface 0.5 m in front: occluded. Joint 7 under an occluder. Joint 9
    # outside the image. Joint 11 behind the camera plane.
    joints[0, :2] = (0.05, 0.05)
    zbuf[4, 4], owner[4, 4] = 1.95, 0
    joints[5, :2] = (0.3, 0.3)
    zbuf[5, 5], owner[5, 5] = 1.5, 1
    joints[7, :2] = (-0.2, -0.2)
    occluder[3, 3] = True
    joints[9, :2] = (2.0, 0.0)
    joints[11] = (0.0, 0.0, -1.0)
    kp = ann.keypoint_labels(joints, focal, size, zbuf, owner, occluder)
    assert kp[0, 2] == 2 and np.allclose(kp[0, :2], (4.2, 4.2))
    assert kp[5, 2] == 1 and kp[7, 2] == 1
    assert kp[9].tolist() == [0, 0, 0] and kp[11].tolist() == [0, 0, 0]
    assert kp[1, 2] == 2  # nothing in front of it


def test_dense_points_spread_evenly_over_each_part():
    rng = np.random.default_rng(4)
    visible = np.zeros((120, 120), bool)
    visible[10:110, 20:80] = True
    part = np.zeros((120, 120), np.int64)
    part[10:90, 20:80] = 2  # big part
    part[90:110, 20:80] = 14  # small part
    rows, cols = ann.sample_dense_points(rng, visible, part)
    assert ann.POINTS_RANGE[0] * 0.8 <= len(rows) <= ann.POINTS_RANGE[1]
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)
    assert visible[rows, cols].all()
    big, small = part[rows, cols] == 2, part[rows, cols] == 14
    assert small.sum() >= 0.15 * len(rows) and big.sum() >= 3 * small.sum()
    # Roughly equidistant: nearest-neighbour distances within a part cluster around the grid spacing.
    pts = np.stack([rows[big], cols[big]], 1).astype(float)
    d, _ = cKDTree(pts).query(pts, k=2)
    nn = d[:, 1]
    spacing = np.sqrt(visible.sum() / len(rows))
    assert np.median(nn) > 0.7 * spacing and (nn > 0.3 * spacing).mean() > 0.95


def test_dp_masks_zoom_matches_the_readers_convention():
    part = np.zeros((50, 60), np.int64)
    part[10:30, 5:25] = 2  # torso -> mask 1
    part[30:41, 5:25] = 23  # head -> mask 14
    visible = part > 0
    box = ann.mask_box(visible)
    assert box == (5, 10, 20, 31)
    masks = ann.dp_masks(part, visible, box)
    assert [k for k, m in enumerate(masks, start=1) if m] == [1, 14]
    torso, head = rle_to_mask(masks[0]), rle_to_mask(masks[13])
    x, y, w, h = box
    for r in range(h):
        cell_y = int((r + 0.5) / h * 256)
        for c in range(w):
            cell_x = int((c + 0.5) / w * 256)
            expected = FINE_TO_MASK14[part[y + r, x + c]]
            assert (torso[cell_y, cell_x], head[cell_y, cell_x]) == (expected == 1, expected == 14)


def test_rle_encoding_round_trips():
    rng = np.random.default_rng(5)
    mask = rng.random((37, 23)) > 0.6
    np.testing.assert_array_equal(rle_to_mask(ann.encode_rle(mask)), mask)
    assert json.dumps(ann.encode_rle(mask))


def test_cli_writes_a_split(tmp_path):
    from datamodules.synthetic import __main__ as cli

    cli.main(["--out", str(tmp_path), "--split", "train", "--num", "2", "--size", "96", "--seed", "1"])
    manifest = json.loads((tmp_path / "manifest_train.json").read_text())
    assert manifest["counts"]["images"] == 2
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == ["000000.jpg", "000001.jpg"]
    assert Path(tmp_path / "densepose_train.json").is_file() and Path(tmp_path / "smpl_train.npz").is_file()


def test_worker_processes_write_the_same_files(dataset, open_body, tmp_path):
    _, manifest, _, _ = dataset
    parallel = generate(
        tmp_path, "val", NUM, SIZE, SEED, body=open_body, shard_size=4, workers=2, progress=False
    )
    assert parallel == manifest


def test_normals_face_the_camera_whatever_the_winding():
    tri = torch.tensor([[[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 1]])
    pix = torch.tensor([5 * 8 + 5, 5 * 8 + 5])
    n = facing_normals(tri, faces, torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), pix, 8, 4.0)
    torch.testing.assert_close(n, torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]))


def test_garment_cuts_pick_the_materials(open_body):
    marks = Landmarks.from_body(open_body)
    mid_arm = (marks.shoulder_x + marks.wrist_x) / 2
    y_arm = float(marks.neck[1]) - 0.05
    belly = (0.0, marks.pelvis_y + 0.1, 0.12)
    rest = torch.tensor(
        [[mid_arm, y_arm, 0.0], belly, (0.1, marks.ankle_y, 0.05), (0.0, marks.eye_y + 0.08, 0.0)]
    )
    part = torch.tensor([17, 2, 5, 23])
    cuts = lambda sleeve, hem, waist, bald: torch.tensor([[sleeve, hem, waist, 1.0, 0.1, bald]] * 4)  # noqa: E731
    M = {name: k for k, name in enumerate(MATERIALS)}
    long_sleeves = material_index(marks, part, rest, cuts(0.6, -0.1, 0.05, 0.0)).tolist()
    assert long_sleeves == [M["top"], M["top"], M["shoes"], M["hair"]]
    crop_top = material_index(marks, part, rest, cuts(0.3, 0.15, 0.05, 1.0)).tolist()
    assert crop_top == [M["skin"], M["skin"], M["shoes"], M["skin"]]
