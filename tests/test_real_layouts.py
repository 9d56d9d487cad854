"""The real files' layouts (SPIN, EFT, DensePose-COCO) through the readers, joins by identity, cameras
fitted where the files have none, gendered GT meshes, protocol 2 from S alone, and the joint tables
checked against SPIN's own index lists."""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from real_layouts import (
    IMAGE_HW,
    OURS_FROM_SPIN_H36M,
    SPIN_COCO_SLOTS,
    SPIN_H36M_SLOTS,
    densepose_json,
    densepose_person,
    h36m_s24,
    intrinsics,
    keypoints_of,
    people,
    project,
    spin_focal,
    square_box,
    write_coco_npz,
    write_h36m_npz,
    write_images,
    write_pw3d_npz,
)
from scipy.optimize import least_squares

from datamodules.camera_fit import fit_translation
from datamodules.collate import collate_samples
from datamodules.datamodule import DatasetSpec, make_reader
from datamodules.dataset import DenseHMRDataset, default_face_mappers
from datamodules.errors import BadSampleLog, DataError
from datamodules.readers import DensePoseCocoReader, SpinNpz, SpinNpzReader
from datamodules.readers.joints import COCO17_FROM_SPIN24, H36M17_FROM_SPIN24, SPIN24_NAMES
from datamodules.transforms import AugmentParams
from densehmr.body.assets import H36M_TO_LSP14
from densehmr.methods.base import BaseMethod, Prediction, Targets
from densehmr.metrics import MeshError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CENTER, SCALE = np.array([80.0, 60.0]), 0.5
K = intrinsics(spin_focal(SCALE), CENTER)
# SPIN's constants.JOINT_NAMES[25:], as written there.
SPIN_GT_NAMES = [
    "Right Ankle", "Right Knee", "Right Hip", "Left Hip", "Left Knee", "Left Ankle", "Right Wrist",
    "Right Elbow", "Right Shoulder", "Left Shoulder", "Left Elbow", "Left Wrist", "Neck (LSP)",
    "Top of Head (LSP)", "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
    "Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear",
]
# SPIN's J24_TO_J14: the S slots of its LSP-14 evaluation joints.
SPIN_J24_TO_J14 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18]


@pytest.fixture(scope="module")
def persons(body):
    return people(body, 4, seed=0)


@pytest.fixture(scope="module")
def mappers(body):
    return default_face_mappers(body)


def _dataset(reader, body, mappers, size=(64, 64)) -> DenseHMRDataset:
    return DenseHMRDataset(reader, body, size, face_mappers=mappers)


# --------------------------------------------------------------------------------------- joint tables
def test_joint_tables_read_the_slots_spin_writes():
    assert [re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_") for n in SPIN_GT_NAMES] == list(SPIN24_NAMES)
    assert COCO17_FROM_SPIN24.tolist() == SPIN_COCO_SLOTS
    assert H36M17_FROM_SPIN24.tolist() == [SPIN_H36M_SLOTS[i] for i in OURS_FROM_SPIN_H36M]
    # Our LSP-14 evaluation joints from S are the ones SPIN evaluates H36M on.
    assert H36M17_FROM_SPIN24[list(H36M_TO_LSP14)].tolist() == SPIN_J24_TO_J14


# --------------------------------------------------------------------------------------- COCO (SPIN, EFT)
def test_spin_coco_npz_reads_part_openpose_and_paths(tmp_path, persons):
    names = [f"train2014/COCO_train2014_{i:012d}.jpg" for i in (36, 49)]
    kps = [keypoints_of(K, p, hidden=(1, 2)) for p in persons[:2]]
    npz = write_coco_npz(tmp_path / "coco_2014_train.npz", names, [square_box(CENTER, SCALE)] * 2, kps)
    reader = SpinNpzReader(npz, tmp_path, BadSampleLog("raise"), box_padding=1.2)
    raw = reader.raw(1)
    assert raw.image_path == tmp_path / names[1]
    expected = kps[1].copy()
    expected[expected[:, 2] > 0, 2] = 1  # SPIN stores visibility 0/1
    np.testing.assert_allclose(raw.keypoints, expected, atol=1e-4)
    np.testing.assert_allclose(raw.bbox, square_box(CENTER, SCALE))
    assert raw.body.pose is None and raw.body.joints3d is None and raw.body.cam_t is None
    assert reader.table.arrays["openpose"].shape == (2, 25, 3)

    bad = dict(np.load(npz))
    bad["openpose"] = bad["openpose"].copy()
    bad["openpose"][1, 0, 2] = 1.5
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match=r"bad.npz, annotation row 1, field 'openpose': confidence outside"):
        SpinNpz(tmp_path / "bad.npz", BadSampleLog("raise"))
    bad["part"] = bad["part"][:, :20]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match=r"'part': wrong shape \(\(2, 20, 3\), expected \(N, 24, 3\) or \(N, 17, 3\)\)"):
        SpinNpz(tmp_path / "bad.npz", BadSampleLog("raise"))


def test_eft_fits_without_camera_get_spins_camera_fitted_to_the_keypoints(tmp_path, body, persons, mappers):
    names = ["train2014/a.jpg"] * 3
    kps = [keypoints_of(K, p) for p in persons[:2]] + [keypoints_of(K, persons[2], hidden=tuple(range(14)))]
    npz = write_coco_npz(tmp_path / "eft.npz", names, [square_box(CENTER, SCALE)] * 3, kps, fits=persons[:3])
    write_images(tmp_path, names)
    reader = SpinNpzReader(npz, tmp_path, BadSampleLog("raise"), box_padding=1.2)
    np.testing.assert_allclose(reader.raw(0).body.cam_K, K)  # 5000 px per 224 px of SPIN's box
    samples = [_dataset(reader, body, mappers)[i] for i in range(3)]
    for sample, person in zip(samples[:2], persons, strict=False):
        assert bool(sample["has_cam"]) and bool(sample["has_smpl"])
        np.testing.assert_allclose(sample["cam_t"].numpy(), person.cam_t, rtol=1e-4)
        # The fitted camera puts the body's joints on the keypoints, in the crop.
        k = sample["cam_K"].double().numpy()
        np.testing.assert_allclose(project(k, person.coco17), sample["kp2d"][:, :2].numpy(), atol=0.02)
    assert not bool(samples[2]["has_cam"])  # 3 visible keypoints: no camera


def test_least_squares_translation_is_spins_weighted_optimum():
    rng = np.random.default_rng(0)
    points = rng.normal(scale=0.5, size=(2, 12, 3))
    k = np.stack([intrinsics(2000.0, np.array([100.0, 90.0])), intrinsics(900.0, np.array([40.0, 60.0]))])
    truth = np.array([[0.1, -0.2, 30.0], [0.0, 0.3, 12.0]])
    keypoints = np.stack([project(k[i], points[i] + truth[i]) for i in range(2)]) + rng.normal(size=(2, 12, 2))
    weights = rng.uniform(0, 1, size=(2, 12))
    weights[0, :3] = 0
    t, ok = fit_translation(points, keypoints, weights, k)
    assert ok.all()
    for i in range(2):
        f, c = np.diag(k[i])[:2], k[i][:2, 2]

        def residual(x, i=i, f=f, c=c):  # SPIN's algebraic residuals, sqrt(weight) per equation
            r = f * (points[i, :, :2] + x[:2]) - (keypoints[i] - c) * (points[i, :, 2:] + x[2])
            return (np.sqrt(weights[i])[:, None] * r).ravel()

        np.testing.assert_allclose(t[i], least_squares(residual, truth[i], xtol=1e-15, ftol=1e-15).x, rtol=1e-8)
    _, ok = fit_translation(points, keypoints, np.zeros((2, 12)), k)
    assert not ok.any()


# --------------------------------------------------------------------------------------- H36M, MPI-INF-3DHP
def test_h36m_files_through_the_config(tmp_path, body, persons):
    names = [f"images/S1_Directions.60457274_{i + 1:06d}.jpg" for i in range(2)]
    write_h36m_npz(tmp_path / "h36m_train.npz", persons[:2], names, True, [CENTER] * 2, [SCALE] * 2)
    write_h36m_npz(tmp_path / "h36m_valid_protocol2.npz", persons[2:4], names, False, [CENTER] * 2, [SCALE] * 2)
    write_images(tmp_path, names)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="data/h36m", overrides=[f"data.root={tmp_path}", "data.num_workers=0"])
    module = instantiate(cfg.data, _partial_=True)(body=body)
    module.setup("fit")
    train, val = module.datasets["train"][0], module.datasets["val"][0]
    raw = train.reader.raw(0)
    assert raw.image_path == tmp_path / names[0] and raw.image_path.is_file()  # not images/images/
    # S (pelvis-centred, SPIN's slots) placed by the fit to part: the true camera-frame joints, our order.
    np.testing.assert_allclose(raw.body.joints3d[:, :3], persons[0].h36m17, atol=1e-4)
    np.testing.assert_allclose(raw.body.joints3d[3, :3], persons[0].h36m17[3], atol=1e-4)  # right ankle
    assert np.allclose(raw.keypoints[[0, 1, 2, 3, 4]], 0)  # H36M gives no face keypoints
    sample = train[0]
    assert bool(sample["has_kp3d"]) and bool(sample["has_cam"]) and not bool(sample["has_smpl"])
    protocol2 = val.reader.raw(1)
    truth = persons[3].h36m17 - persons[3].h36m17[0]
    np.testing.assert_allclose(protocol2.body.joints3d[:, :3], truth, atol=1e-6)
    assert protocol2.keypoints is None and protocol2.body.cam_t is None
    assert bool(val[1]["has_kp3d"]) and not bool(val[1]["has_cam"])


def test_mpi_inf_3dhp_layout(tmp_path, persons):
    train = ["S1/Seq1/imageFrames/video_0/frame_000001.jpg", "S1/Seq1/imageFrames/video_0/frame_000011.jpg"]
    npz = write_h36m_npz(tmp_path / "mpi_inf_3dhp_train.npz", persons[:2], train, True, [CENTER] * 2, [SCALE] * 2)
    reader = SpinNpzReader(npz, tmp_path, BadSampleLog("raise"), box_padding=1.2)
    assert reader.raw(1).image_path == tmp_path / train[1]
    np.testing.assert_allclose(reader.raw(1).body.joints3d[:, :3], persons[1].h36m17, atol=1e-4)


def test_protocol_2_errors_come_from_s_alone(body, persons):
    """MPJPE / PA-MPJPE of samples with S and no SMPL parameters: a prediction that is the GT scaled by
    1.1 about its pelvis has PA-MPJPE 0 and MPJPE 0.1 x the mean joint distance to the pelvis."""
    from densehmr.body.smpl_layout import make_smplx

    model = make_smplx(body.model_file, body.vertex_ids)
    p = persons[0]
    verts = model(betas=torch.tensor(p.betas, dtype=torch.float32)[None],
                  body_pose=torch.tensor(p.pose[3:], dtype=torch.float32)[None],
                  global_orient=torch.tensor(p.pose[:3], dtype=torch.float32)[None]).vertices.detach().double()
    regressor = body.regressors["h36m17"].double()
    joints = regressor @ verts[0]
    pelvis_v = joints[0]
    pred = (verts - pelvis_v) * 1.1 + pelvis_v
    lsp = joints[list(H36M_TO_LSP14)] - joints[0]
    metric = MeshError(regressor)
    fake = SimpleNamespace(metrics=lambda: {"mesh": metric, "densepose": None})
    kp3d = torch.cat([joints - joints[0], torch.ones(17, 1, dtype=torch.float64)], 1)[None]
    batch = {
        "has_smpl": torch.tensor([False]), "has_kp3d": torch.tensor([True]), "kp3d": kp3d,
        **{k: torch.zeros(1, 1) for k in ("dp_xy", "dp_I", "dp_U", "dp_V", "dp_valid", "mask", "bbox", "has_dp")},
    }
    BaseMethod.update_metrics(fake, Prediction(verts=pred), batch, Targets(verts=None))
    out = metric.compute()
    assert float(out["pa_mpjpe"]) < 1e-6 and torch.isnan(out["pve"])
    assert float(out["mpjpe"]) == pytest.approx(float(0.1 * lsp.norm(dim=-1).mean() * 1000), rel=1e-6)


# --------------------------------------------------------------------------------------- 3DPW gender
def _gendered_body(body, tmp_path) -> object:
    """The body with 'male' = its own file and 'female' = its template shrunk by 10%."""
    with open(body.model_file, "rb") as f:
        model = pickle.load(f)
    model["v_template"] = model["v_template"] * 0.9
    female = tmp_path / "female.pkl"
    with open(female, "wb") as f:
        pickle.dump(model, f)
    return replace(body, extras={**body.extras, "gendered_model_files": {"male": body.model_file, "female": female}})


def _gt_holder(body):
    holder = SimpleNamespace(body=body, device=torch.device("cpu"), _gt_body={}, _neutral_said=False)
    holder._gt_vertices = lambda file, batch: BaseMethod._gt_vertices(holder, file, batch)
    return holder


def test_3dpw_gender_picks_the_gendered_gt_body(tmp_path, body, persons, mappers, caplog):
    names = ["imageFiles/courtyard_basketball_00/image_00000.jpg"] * 2
    npz = write_pw3d_npz(tmp_path / "3dpw_test.npz", persons[:2], names, ["m", "f"], [CENTER] * 2, [SCALE] * 2)
    assert np.load(npz)["gender"].dtype == np.dtype("<U1")
    write_images(tmp_path, names)
    reader = SpinNpzReader(npz, tmp_path, BadSampleLog("raise"), box_padding=1.2)
    batch = collate_samples([_dataset(reader, body, mappers)[i] for i in range(2)])
    assert batch["gender"].tolist() == [1, 2] and batch["has_smpl"].all() and not batch["has_cam"].any()

    gendered = _gendered_body(body, tmp_path)
    holder = _gt_holder(gendered)
    verts = BaseMethod.gt_vertices(holder, batch)
    neutral = BaseMethod._gt_vertices(holder, body.model_file, batch)
    female = BaseMethod._gt_vertices(holder, gendered.extras["gendered_model_files"]["female"], batch)
    assert torch.equal(verts[0], neutral[0]) and torch.equal(verts[1], female[1])
    assert not torch.allclose(female[1], neutral[1])

    plain = _gt_holder(body)
    with caplog.at_level(logging.WARNING, logger="densehmr.methods.base"):
        for _ in range(2):
            BaseMethod.gt_vertices(plain, batch)
    said = [r.getMessage() for r in caplog.records if "gendered" in r.getMessage()]
    assert len(said) == 1 and "body 'open' has no gendered models" in said[0]


def test_bad_gender_names_file_row_and_field(tmp_path, persons):
    npz = write_pw3d_npz(tmp_path / "g.npz", persons[:2], ["a.jpg"] * 2, ["m", "x"], [CENTER] * 2, [SCALE] * 2)
    with pytest.raises(DataError, match=r"g.npz, annotation row 1, field 'gender': not 'm', 'f' or 'n'"):
        SpinNpz(npz, BadSampleLog("raise"))


# --------------------------------------------------------------------------------------- joins
def _coco_scene(tmp_path, persons):
    """Two images: three DensePose persons in the first, one in the second; boxes per person."""
    boxes = [square_box([40.0, 50.0], 0.4), square_box([110.0, 60.0], 0.5), square_box([80.0, 70.0], 0.3),
             square_box([70.0, 60.0], 0.45)]
    images = [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 160, "height": 120},
              {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 160, "height": 120}]
    kps = [keypoints_of(K, p) for p in persons]
    anns = [densepose_person(501 + i, 1 if i < 3 else 2, boxes[i], kps[i], seed=i) for i in range(4)]
    path = densepose_json(tmp_path / "densepose_coco_2014_train.json", images, anns)
    write_images(tmp_path / "train2014", [im["file_name"] for im in images])
    return path, boxes, kps, images


def test_npz_without_ids_joins_by_image_name_and_box_never_by_position(tmp_path, persons):
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    # Rows in another order than the persons; person 502 has no row; one row is a person DensePose lacks.
    order = [3, 0, 2]
    names = [f"train2014/{images[0 if i < 3 else 1]['file_name']}" for i in order]
    row_boxes = [boxes[i] for i in order]
    names.append(f"train2014/{images[0]['file_name']}")
    row_boxes.append(square_box([10.0, 10.0], 0.2))
    fits = [persons[i] for i in order] + [persons[1]]
    npz = write_coco_npz(tmp_path / "fits.npz", names, row_boxes, [kps[i] for i in order] + [kps[1]], fits=fits)
    log = BadSampleLog("raise")
    reader = DensePoseCocoReader(path, tmp_path / "train2014", log, smpl=SpinNpz(npz, log), box_padding=1.2)
    by_id = {reader.raw(i).ann_id: reader.raw(i).body for i in range(len(reader))}
    for person in (0, 2, 3):
        np.testing.assert_allclose(by_id[501 + person].betas, persons[person].betas.astype(np.float32))
    assert by_id[502] is None
    report = reader.join_report
    assert report.key == "image name + box" and report.joined == 3
    assert report.persons_unjoined == 1 and report.rows_unjoined == 1


def test_unjoined_rows_are_reported_when_the_datamodule_reads_them(tmp_path, persons, caplog):
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    name = f"train2014/{images[0]['file_name']}"
    write_coco_npz(tmp_path / "fits.npz", [name, name], [boxes[0], square_box([10.0, 10.0], 0.2)], kps[:2],
                   fits=persons[:2])
    spec = DatasetSpec("dp", root=str(tmp_path), densepose_json=path.name, image_root="train2014",
                       smpl_npz="fits.npz", box_padding=1.2)
    with caplog.at_level(logging.INFO, logger="datamodules.datamodule"):
        make_reader(spec, BadSampleLog("raise"))
    [record] = [r for r in caplog.records if "joined by" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("fits.npz joined by image name + box: 1 of 4 persons, 1 of 2 rows unjoined")


def test_eft_annot_ids_join_by_id_and_check_the_image(tmp_path, persons):
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    names = [f"train2014/{images[0]['file_name']}", f"train2014/{images[0]['file_name']}",
             f"train2014/{images[0]['file_name']}"]  # the last names the wrong image for person 504
    npz = write_coco_npz(tmp_path / "eft.npz", names, [boxes[1], boxes[0], boxes[3]], [kps[1], kps[0], kps[3]],
                         fits=[persons[1], persons[0], persons[3]], annot_ids=[502, 501, 504])
    log = BadSampleLog("raise")
    reader = DensePoseCocoReader(path, tmp_path / "train2014", log, smpl=SpinNpz(npz, log), box_padding=1.2)
    by_id = {reader.raw(i).ann_id: reader.raw(i).body for i in range(len(reader))}
    np.testing.assert_allclose(by_id[502].betas, persons[1].betas.astype(np.float32))
    assert by_id[503] is None and by_id[504] is None
    report = reader.join_report
    assert (report.key, report.joined, report.image_conflicts, report.rows_unjoined) == ("annotation id", 2, 1, 1)


def test_pelvis_relative_s_of_a_fitted_body_goes_to_its_pelvis(tmp_path, body, persons, mappers):
    """A row with SMPL parameters and S but no 2D keypoints of its own (joined to DensePose persons that
    have them): the body's translation is fitted to the person's keypoints and S placed at its pelvis."""
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    name = f"train2014/{images[0]['file_name']}"
    npz = write_coco_npz(tmp_path / "mosh.npz", [name], [boxes[0]], [kps[0]], fits=[persons[0]], annot_ids=[501])
    arrays = dict(np.load(npz))
    del arrays["part"]
    arrays["S"] = h36m_s24(persons[0])[None]
    np.savez(npz, **arrays)
    log = BadSampleLog("raise")
    reader = DensePoseCocoReader(path, tmp_path / "train2014", log, smpl=SpinNpz(npz, log), box_padding=1.2)
    k = intrinsics(spin_focal(1.2 * boxes[0][2] / 200), np.array(boxes[0][:2]) + boxes[0][2] / 2)
    np.testing.assert_allclose(reader.raw(0).body.cam_K, k)
    # The DensePose keypoints of this person, as that camera sees it.
    raw = replace(reader.raw(0), keypoints=keypoints_of(k, persons[0]).astype(np.float32))
    sample = _dataset(reader, body, mappers).build(raw, np.zeros((*IMAGE_HW, 3), np.uint8), AugmentParams())
    assert bool(sample["has_cam"]) and bool(sample["has_kp3d"])
    np.testing.assert_allclose(sample["kp3d"][:, :3].numpy(), persons[0].h36m17, atol=1e-3)


# --------------------------------------------------------------------------------------- COCO quirks
def test_polygon_of_fewer_than_3_points_is_dropped_alone(tmp_path, persons):
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    import json

    data = json.loads(path.read_text())
    good = data["annotations"][0]["segmentation"][0]
    data["annotations"][0]["segmentation"] = [good, [30.0, 40.0, 31.0, 41.0]]
    path.write_text(json.dumps(data))
    reader = DensePoseCocoReader(path, tmp_path / "train2014", BadSampleLog("raise"))
    assert reader.raw(0).segmentation == [good] and reader.dropped_polygons == 1
    data["annotations"][0]["segmentation"] = [[30.0, 40.0, 31.0, 41.0]]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotation 501, field 'segmentation': not polygons"):
        DensePoseCocoReader(path, tmp_path / "train2014", BadSampleLog("raise"))


@pytest.mark.parametrize(("overshoot", "accepted"), [(1.6, True), (2.0, True), (2.5, False)])
def test_box_slack_past_the_image(tmp_path, persons, overshoot, accepted):
    """160 x 120 images: the slack is max(2 px, 1% of the side) = 2 px on both axes."""
    path, boxes, kps, images = _coco_scene(tmp_path, persons)
    import json

    data = json.loads(path.read_text())
    x, y, w, _ = data["annotations"][3]["bbox"]
    data["annotations"][3]["bbox"] = [x, y, w, IMAGE_HW[0] + overshoot - y]
    path.write_text(json.dumps(data))
    if accepted:
        assert len(DensePoseCocoReader(path, tmp_path / "train2014", BadSampleLog("raise"))) == 4
    else:
        with pytest.raises(DataError, match="annotation 504, field 'bbox': outside the image"):
            DensePoseCocoReader(path, tmp_path / "train2014", BadSampleLog("raise"))
