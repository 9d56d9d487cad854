"""Running trained methods on ordinary images: reading any image, cropping as the DataModule does,
loading runs, and the demo's pictures, JSON and one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from two_people import two_people_photo

from datamodules.benchmark import write_fixture_dataset
from datamodules.crop import apply_affine, invert_affine
from datamodules.dataset import DenseHMRDataset, decode_reduction
from datamodules.errors import BadSampleLog
from datamodules.readers import DensePoseCocoReader
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from densehmr import demo
from densehmr.detection.boxes import iou_matrix
from densehmr.inference import (
    BACKDROP,
    ImageError,
    ModelError,
    Predictor,
    crop_person,
    load_method,
    parse_box,
    read_image,
)
from densehmr.model_card import ModelCard
from densehmr.train import CONFIG_DIR

DATA = Path(__file__).resolve().parent / "data"
BOXES = json.loads((DATA / "boxes.json").read_text())
IMAGES = sorted(p.name for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


def make_run(folder: Path, method: str = "meshpose", *overrides: str) -> Path:
    """A run folder as training leaves it (config.yaml, checkpoints/last.ckpt), with random weights."""
    from densehmr.runs import build_method

    small = {
        "meshpose": ["meshpose.neck_channels=16", "meshpose.lifting_hidden=8", "meshpose.lifting_bins=16"],
        "densereg": ["densereg.head_width=16", "densereg.head_convs=1"],
        "pymaf": ["pymaf.channels=16", "pymaf.hidden=32"],
        "dct": ["dct.hidden=32"],
    }[method]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"method={method}", "backbone=mobilenet_v2", "image_size=[64,64]",
                                          f"run_dir={folder}", *small, *overrides])
    torch.manual_seed(0)
    model = build_method(cfg)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)},
               folder / "checkpoints" / "last.ckpt")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "meshpose" / "r1")


# ----------------------------------------------------------------------------- reading images
def test_every_test_image_reads_as_upright_rgb8():
    reference = np.asarray(Image.open(DATA / "person.jpg").convert("RGB"))
    for name in IMAGES:
        image = read_image(DATA / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    # EXIF orientation 6: stored turned a quarter counter-clockwise, read back upright (JPEG re-encoded).
    upright = read_image(DATA / "person_exif_rotated.jpg").astype(np.float64)
    assert upright.shape == reference.shape and np.abs(upright - reference).mean() < 3.0
    # 16-bit grey (value * 257) reads as the 8-bit grey it was made from.
    grey = np.asarray(Image.open(DATA / "person_gray.png"))
    assert np.array_equal(read_image(DATA / "person_gray16.png"), np.repeat(grey[..., None], 3, axis=-1))
    assert np.array_equal(read_image(DATA / "person_gray.png"), np.repeat(grey[..., None], 3, axis=-1))
    # Palette PNG: the palette's colours.
    assert np.array_equal(read_image(DATA / "people.png"), np.asarray(Image.open(DATA / "people.png").convert("RGB")))


def test_transparency_is_laid_over_the_neutral_backdrop():
    rgba = np.asarray(Image.open(DATA / "person_rgba.png")).astype(np.float64)
    got = read_image(DATA / "person_rgba.png").astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * alpha + np.array(BACKDROP) * (1 - alpha)
    assert np.abs(got - expected).max() <= 1.0
    assert (got[:, 0] == BACKDROP).all()  # the fully transparent border


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes((DATA / "person.jpg").read_bytes()[:1500]), "truncated"),
        (lambda p: p.write_bytes(b""), "not an image"),
        (lambda p: p.write_text("name,x,y\n"), "not an image"),
        (lambda p: p.write_bytes((DATA / "people.png").read_bytes()[:300]), "truncated"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "a folder"),
    ],
)
def test_unreadable_files_are_refused_in_one_line_naming_them(tmp_path, make, reason):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_parse_box():
    assert parse_box("1,2,30.5,40").tolist() == [1.0, 2.0, 30.5, 40.0]
    assert parse_box(None) is None
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10", "0,0,nan,4"):
        with pytest.raises(ValueError, match="x,y,w,h"):
            parse_box(bad)


# ----------------------------------------------------------------------------- crops
def test_crop_is_the_datamodules_evaluation_crop(tmp_path):
    from test_transforms import fake_body

    root = write_fixture_dataset(tmp_path / "data", num_images=2, people_per_image=2, image_hw=(90, 120))
    reader = DensePoseCocoReader(root / "densepose_train.json", root / "images", BadSampleLog("raise"))
    dataset = DenseHMRDataset(reader, fake_body(tmp_path / "body"), (48, 32))
    reductions = set()
    for i in range(len(reader)):
        raw, sample = reader.raw(i), dataset[i]
        crop = crop_person(read_image(raw.image_path), raw.bbox, (48, 32))
        assert np.allclose(invert_affine(crop.affine), sample["affine"].numpy(), atol=1e-5)
        assert np.allclose(crop.box_crop, sample["bbox"].numpy(), atol=1e-4)
        diff = (crop.image - sample["image"]).abs() * torch.tensor(IMAGENET_STD)[:, None, None] * 255
        reduction = decode_reduction(crop.affine)
        reductions.add(reduction)
        if reduction == 1:
            assert diff.max() < 1e-3  # the same pixels through the same warp
        else:  # the DataModule's JPEG decoded at 1/r by libjpeg, ours shrunk by area average
            assert diff.mean() < 4.0
    assert reductions == {1, 2}


def test_crop_intrinsics_are_the_image_camera_seen_through_the_crop():
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    crop = crop_person(image, np.array([40.0, 60.0, 50.0, 120.0]), (64, 48), focal=350.0)
    points = np.random.default_rng(0).uniform([-1, -1, 2], [1, 1, 6], size=(50, 3))

    def project(k):
        return (points @ k.T)[:, :2] / points[:, 2:]

    assert crop.K_image[0, 0] == 350.0 and crop.K_image[0, 2] == 100.0
    assert np.allclose(project(crop.K_crop), apply_affine(crop.affine, project(crop.K_image)))
    whole = crop_person(image, None, (64, 48))
    assert whole.box.tolist() == [0.0, 0.0, 200.0, 300.0] and whole.K_image[0, 0] == 300.0
    assert np.allclose(whole.image.mean((1, 2)).numpy(), -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD))


# ----------------------------------------------------------------------------- runs and predictions
def test_load_method_from_a_run_a_checkpoint_or_hyperparameters(run_dir, tmp_path):
    model, cfg = load_method(run=run_dir)
    assert cfg.method.name == "meshpose" and not model.training
    reference = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    same, _ = load_method(ckpt=run_dir / "checkpoints" / "last.ckpt")
    loose = tmp_path / "loose.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", loose)
    from_hparams, none = load_method(ckpt=loose, method="meshpose")
    assert none is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)["verts_low"]
        assert torch.equal(same(x)["verts_low"], want) and torch.equal(from_hparams(x)["verts_low"], want)
    with pytest.raises(ModelError, match="not pymaf"):
        load_method(run=run_dir, method="pymaf")
    with pytest.raises(ModelError, match="name its method"):
        load_method(ckpt=loose)
    with pytest.raises(ModelError, match="not a run folder"):
        load_method(run=tmp_path)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(loose.read_bytes()[:5000])
    with pytest.raises(ModelError, match="unreadable checkpoint"):
        load_method(ckpt=broken, method="meshpose")


def test_predictions_come_back_to_image_coordinates(run_dir):
    model, _ = load_method(run=run_dir)
    image = read_image(DATA / "person.jpg")
    box = np.array(BOXES["person.jpg"])
    result = Predictor(model)(image, [box])[0]
    batch_crop = crop_person(image, box, (64, 64))
    with torch.no_grad():
        out = model(batch_crop.image[None])
    crop_kp = torch.einsum("jv,vc->jc", model.landmark_coco, out["verts_low"][0, :, :2]).numpy()
    assert np.allclose(result.kp2d[:, :2].numpy(), apply_affine(invert_affine(batch_crop.affine), crop_kp), atol=1e-3)
    assert result.verts.shape == (model.body.num_vertices, 3) and (result.verts[:, 2] > 0).all()
    assert result.iuv.shape == (3, 64, 64)


# ----------------------------------------------------------------------------- the demo
def caption_rows(picture: np.ndarray, panel_height: int) -> np.ndarray:
    """The caption strip under the panels: rows that are not all white hold text."""
    strip = picture[panel_height:]
    return np.flatnonzero((strip < 128).any(axis=(1, 2)))


def test_demo_writes_pictures_and_vertices_and_refuses_bad_files_in_one_line(run_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(DATA, folder)
    (folder / "broken.jpg").write_bytes((DATA / "person.jpg").read_bytes()[:900])
    out = tmp_path / "out"
    code = demo.main([str(folder), "--run", str(run_dir), "--detector", "whole", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1 and str(folder / "broken.jpg") in err[0]
    for name in IMAGES:
        stem = demo.output_stem(Path(name))
        picture = np.asarray(Image.open(out / f"{stem}.png"))
        h, w = read_image(DATA / name).shape[:2]
        s = demo.display_scale((h, w))
        assert picture.shape[0] > round(h * s) and picture.shape[1] >= 3 * round(w * s)  # three panels, caption
        assert len(caption_rows(picture, round(h * s))) > 0
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["method"] == "meshpose" and record["detector"]["name"] == "whole"
        (person,) = record["people"]
        assert person["box_xywh"] == [0.0, 0.0, w, h]
        assert np.asarray(person["vertices"]).shape == (person["num_vertices"], 3)
        assert np.asarray(person["keypoints_coco17"]).shape == (17, 3)


def test_demo_with_a_box_matches_the_predictor(run_dir, tmp_path, capsys):
    box = BOXES["person.jpg"]
    out = tmp_path / "out"
    code = demo.main([str(DATA / "person.jpg"), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"),
                      "--box", ",".join(map(str, box)), "--out", str(out)])
    assert code == 0 and capsys.readouterr().err.count("error") == 0
    record = json.loads((out / "person_jpg.json").read_text())
    model, _ = load_method(run=run_dir)
    expected = Predictor(model)(read_image(DATA / "person.jpg"), [np.array(box)])[0]
    (person,) = record["people"]
    assert person["box_xywh"] == box and person["score"] is None and record["detector"]["name"] == "box"
    assert np.allclose(person["vertices"], expected.verts.numpy(), atol=1e-5)


def test_demo_of_a_method_without_a_mesh_shows_the_iuv_only(tmp_path, capsys):
    run = make_run(tmp_path / "densereg" / "r1", "densereg")
    out = tmp_path / "out"
    assert demo.main([str(DATA / "people.png"), "--run", str(run), "--detector", "whole", "--out", str(out)]) == 0
    record = json.loads((out / "people_png.json").read_text())
    assert record["people"][0]["vertices"] is None and record["method"] == "densereg"
    picture = np.asarray(Image.open(out / "people_png.png"))
    assert picture.shape[1] == 256  # one panel


def test_demo_refuses_bad_arguments_in_one_line(run_dir, tmp_path, capsys):
    (tmp_path / "dets.json").write_text('[{"image_id": "person.jpg", "bbox": [1, 2], "score": 1}]')
    assert demo.main([str(DATA / "person.jpg"), "--run", str(run_dir), "--box", "1,2,3"]) == 2
    assert demo.main([str(DATA / "person.jpg"), "--run", str(tmp_path / "nope")]) == 2
    assert demo.main([str(DATA / "person.jpg"), "--run", str(run_dir), "--boxes", str(tmp_path / "dets.json")]) == 2
    assert demo.main([str(DATA / "person.jpg"), "--run", str(run_dir), "--detector", "yolo"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 4 and "x,y,w,h" in err[0] and "nope" in err[1]
    assert "dets.json: detection[0]: field 'bbox'" in err[2] and "--detector" in err[3]


# ----------------------------------------------------------------------------- people in a photograph
METRICS = {"densepose/gps_ap": 0.123, "mesh/pa_mpjpe": 143.8, "val/densepose/gps_ap": 0.5}


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, body) -> tuple[Path, np.ndarray]:
    """A folder holding the two-person photograph, and its people's true boxes (2, 4) xywh."""
    folder = tmp_path_factory.mktemp("two_people")
    return folder, two_people_photo(body, folder / "two.jpg")


def test_demo_finds_both_people_of_a_photo_from_a_detections_file(run_dir, two_people, tmp_path, capsys):
    folder, truth = two_people
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    detections = [
        {"image_id": "two.jpg", "category_id": 1, "bbox": truth[0].tolist(), "score": 0.95},
        {"image_id": "two.jpg", "category_id": 1, "bbox": truth[1].tolist(), "score": 0.9},
        {"image_id": "two.jpg", "category_id": 1, "bbox": (truth[0] + [3, 2, 0, 0]).tolist(), "score": 0.8},  # NMS
        {"image_id": "two.jpg", "category_id": 1, "bbox": [10, 10, 60, 120], "score": 0.3},  # under 0.5
        {"image_id": "two.jpg", "category_id": 1, "bbox": [400, 20, 12, 20], "score": 0.99},  # too small
        {"image_id": "two.jpg", "category_id": 18, "bbox": [200, 200, 60, 60], "score": 0.99},  # a dog
    ]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    out = tmp_path / "out"
    assert demo.main([str(folder), "--run", str(run_dir), "--boxes", str(tmp_path / "dets.json"),
                      "--out", str(out)]) == 0
    record = json.loads((out / "two_jpg.json").read_text())
    assert [p["box_xywh"] for p in record["people"]] == truth.tolist()
    assert [p["score"] for p in record["people"]] == [0.95, 0.9]
    model, _ = load_method(run=run_dir)
    expected = Predictor(model)(read_image(folder / "two.jpg"), list(truth))
    for person, want in zip(record["people"], expected, strict=True):
        assert np.allclose(person["vertices"], want.verts.numpy(), atol=1e-5)
    # The model card: checkpoint, method, training data and the run's validation metrics.
    card = record["model"]
    assert card["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt") and card["method"] == "meshpose"
    assert card["training_data"] == "synthetic" and card["datasets"] == ["synthetic"]
    assert card["metrics"] == {"densepose/gps_ap": 0.123, "mesh/pa_mpjpe": 143.8}  # test split = val split
    assert card["metrics_split"] == "val (synthetic)"
    lines = ModelCard(**card).lines()
    assert "synthetic renders only" in lines[1] and "GPS AP 12.3" in lines[2] and "PA-MPJPE (mm) 143.8" in lines[2]
    picture = np.asarray(Image.open(out / "two_jpg.png"))
    assert picture.shape[1] == 3 * 480 + 4 and len(caption_rows(picture, 320)) > 4 * 8  # four lines of text
    # Each numbered box is drawn on the first panel at the person's box.
    x, y, w, h = truth[1].astype(int)
    edge = picture[y + h // 2, x - 1 : x + 2]
    assert (np.abs(edge.astype(int) - demo.BOX_COLOUR).sum(axis=-1) < 60).any()
    (run_dir / "metrics.json").unlink()


def test_make_demo_with_the_builtin_detector_writes_two_records(run_dir, two_people, tmp_path, capsys):
    folder, truth = two_people
    out = tmp_path / "out"
    assert demo.main([str(folder), "--run", str(run_dir), "--out", str(out)]) == 0
    record = json.loads((out / "two_jpg.json").read_text())
    assert record["detector"]["name"] == "opencv-hog" and len(record["people"]) == 2
    found = np.array([p["box_xywh"] for p in record["people"]])
    assert (iou_matrix(truth, found).max(axis=1) > 0.6).all()


def test_demo_says_in_one_line_when_nobody_is_found(run_dir, tmp_path, capsys):
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    out = tmp_path / "out"
    assert demo.main([str(tmp_path / "wall.png"), "--run", str(run_dir), "--out", str(out)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"{tmp_path / 'wall.png'}: no person found (OpenCV HOG")
    assert not out.exists() or not any(out.iterdir())


def test_demo_uses_the_boxes_of_an_onnx_detector(run_dir, two_people, tmp_path, capsys):
    from test_detection import FRACTIONS, SCORES, FixedDetector, export

    folder, _ = two_people
    onnx = export(FixedDetector(), tmp_path / "people.onnx", (64, 64), dynamic=True)
    out = tmp_path / "out"
    assert demo.main([str(folder), "--run", str(run_dir), "--detector", str(onnx), "--out", str(out)]) == 0
    record = json.loads((out / "two_jpg.json").read_text())
    h, w = read_image(folder / "two.jpg").shape[:2]
    corners = FRACTIONS[:2].numpy() * [w, h, w, h]  # the third detection is not a person
    expected = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    assert record["detector"]["name"] == "onnx"
    assert np.allclose([p["box_xywh"] for p in record["people"]], expected, atol=1e-4)
    assert np.allclose([p["score"] for p in record["people"]], SCORES[:2].numpy(), atol=1e-5)
