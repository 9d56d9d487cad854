"""Running a trained method on ordinary images: load a run or a checkpoint, read any image Pillow
reads, crop a person exactly as the DataModule does, and predict.

Frames: the image camera is a pinhole with its principal point at the image centre and a focal of
`focal` px (default: the image's larger side, about a 53 degree field of view, a phone's wide lens);
the crop is a similarity of the image (no rotation), so camera-frame vertices are the same in both and
the crop's intrinsics are the crop affine applied to the image's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from datamodules.crop import (
    apply_affine,
    box_through,
    compose,
    crop_affine,
    invert_affine,
    padded_box,
    scale_affine,
    to_3x3,
    warp,
)
from datamodules.dataset import decode_reduction
from datamodules.transforms import IMAGENET_MEAN, normalize_image
from densehmr.checkpoints import CheckpointError, load_checkpoint
from densehmr.methods.base import BaseMethod, Prediction
from densehmr.methods.registry import method_class, method_names

# Transparent pixels are laid over the ImageNet mean, which the networks see as a neutral grey.
BACKDROP = tuple(int(round(c * 255)) for c in IMAGENET_MEAN)


class ImageError(ValueError):
    """An image file that cannot be used; the message is one line naming the file."""


class ModelError(FileNotFoundError):
    """No run or checkpoint where one was asked for; the message is one line."""


# ----------------------------------------------------------------------------- images
def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any still image Pillow reads, upright (EXIF orientation applied):
    grayscale, palette, CMYK, 16-bit and float images are brought to 8-bit RGB, transparency is laid
    over a neutral grey. ImageError if the file is missing, not an image, or truncated."""
    path = Path(path)
    try:
        # Pillow warns about damaged metadata it can skip; the picture either decodes or fails below.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="PIL")
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not later
                return to_rgb8(ImageOps.exif_transpose(img))
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: a folder, not an image") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: unreadable or truncated image ({reason})") from exc


def to_rgb8(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded Pillow image of any mode."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        peak = values.max(initial=0.0)
        if img.mode.startswith("I;16"):
            full_scale = 65535.0
        elif img.mode == "F" and peak <= 1.0:
            full_scale = 1.0
        else:
            full_scale = 255.0 if peak <= 255.0 else 65535.0
        grey = np.clip(values / full_scale * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*BACKDROP, 255))
        img = Image.alpha_composite(backdrop, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def parse_box(text: str | None) -> np.ndarray | None:
    """(4,) xywh from "x,y,w,h" (w, h > 0), or None."""
    if text is None or not str(text).strip():
        return None
    try:
        box = np.array([float(v) for v in str(text).split(",")], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"--box must be x,y,w,h numbers, got {text!r}") from exc
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"--box must be x,y,w,h with w, h > 0, got {text!r}")
    return box


# ----------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class Crop:
    """A person crop and how it sits in its image.

    image:   (3, H, W) float32 ImageNet-normalized crop.
    affine:  (2, 3) image px -> crop px.
    K_image: (3, 3) intrinsics of the image, px.   K_crop: (3, 3) the same camera in crop px.
    box:     (4,) xywh person box in image px.     box_crop: (4,) the box in crop px.
    """

    image: Tensor
    affine: np.ndarray
    K_image: np.ndarray
    K_crop: np.ndarray
    box: np.ndarray
    box_crop: np.ndarray


def image_intrinsics(image_hw: tuple[int, int], focal: float | None = None) -> np.ndarray:
    """(3, 3) pinhole intrinsics of an image: focal px (default its larger side), centred."""
    h, w = image_hw
    f = float(focal) if focal else float(max(h, w))
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def crop_person(
    image: np.ndarray, box: np.ndarray | None, image_size: tuple[int, int], focal: float | None = None
) -> Crop:
    """The crop of person `box` (xywh px; None: the whole image) from image (h, w, 3) uint8, made as the
    DataModule makes its evaluation crops: the box grown to the crop's aspect, padded by 1.2, warped
    from the image shrunk by the DataModule's decode reduction."""
    h, w = image.shape[:2]
    box = np.array([0.0, 0.0, w, h]) if box is None else np.asarray(box, dtype=np.float64)
    centre, box_wh = padded_box(box, image_size)
    affine = crop_affine(centre, box_wh, image_size)
    # As the DataModule decodes JPEGs at 1/2, 1/4 or 1/8 when the crop is that much smaller than the
    # box, the image is first shrunk by that factor (area average): no aliasing from large photos.
    reduction = decode_reduction(affine)
    source = image
    if reduction > 1:
        size = (-(-w // reduction), -(-h // reduction))
        source = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    crop = warp(source, compose(affine, scale_affine(reduction)), image_size)
    k_image = image_intrinsics((h, w), focal)
    return Crop(
        image=torch.from_numpy(normalize_image(crop)),
        affine=affine,
        K_image=k_image,
        K_crop=to_3x3(affine) @ k_image,
        box=box,
        box_crop=box_through(affine, box),
    )


def inference_batch(crops: list[Crop], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """What the methods' forward and predict read, for crops without annotations."""
    n = len(crops)
    return {
        "image": torch.stack([c.image for c in crops]).to(device),
        "cam_K": torch.tensor(np.stack([c.K_crop for c in crops]), dtype=torch.float32, device=device),
        "has_cam": torch.ones(n, dtype=torch.bool, device=device),
        "bbox": torch.tensor(np.stack([c.box_crop for c in crops]), dtype=torch.float32, device=device),
        "has_smpl": torch.zeros(n, dtype=torch.bool, device=device),
    }


# ----------------------------------------------------------------------------- models
def find_checkpoint(run: Path) -> Path:
    """`checkpoints/last.ckpt` of a run folder, else its newest checkpoint."""
    folder = run / "checkpoints"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ModelError(f"{run}: no checkpoint in {folder}")
    return found[-1]


def load_method(
    run: str | Path | None = None,
    ckpt: str | Path | None = None,
    method: str | None = None,
    device: torch.device | str = "cpu",
    runs_root: str | Path = "runs",
) -> tuple[BaseMethod, DictConfig | None]:
    """A trained method in eval mode and its run's config (None when the checkpoint has no run folder).

    With `ckpt`, its run folder's config.yaml builds the method when there is one (checkpoints/ sits in
    the run folder), else the checkpoint's hyper-parameters do (then `method`, one of the configured
    methods (densehmr.methods.registry), names the class). With
    `run` only, its last checkpoint; with neither, `runs_root/<method>/latest`.
    """
    if ckpt is None:
        if run is None:
            if method is None:
                raise ModelError("name a checkpoint, a run folder or a method")
            run = Path(runs_root) / method / "latest"
        run = Path(run)
        if not (run / "config.yaml").is_file():
            raise ModelError(f"{run}: not a run folder (no config.yaml)")
        ckpt = find_checkpoint(run)
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelError(f"{ckpt}: no such checkpoint")
    run = Path(run) if run is not None else ckpt.resolve().parent.parent
    from densehmr.runs import build_method, compose_train, saved_run_config

    cfg = saved_run_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    try:
        state = load_checkpoint(ckpt)  # verified: whole, unaltered, finite weights
    except CheckpointError as exc:
        raise ModelError(f"{ckpt}: unreadable checkpoint ({str(exc).split(': ', 1)[1]})") from exc
    if cfg is not None:
        if method is not None and cfg.method.name != method:
            raise ModelError(f"{ckpt}: a {cfg.method.name} checkpoint, not {method}")
        model = build_method(cfg)
    else:
        known = method_names()
        if method not in known:
            raise ModelError(f"{ckpt}: no run config beside it; name its method (one of {', '.join(known)})")
        node = compose_train([f"method={method}"]).get(method)  # options the checkpoint predates: today's defaults
        options = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        model = method_class(method)(**{**options, **state["hyper_parameters"]})
    model.load_state_dict(state["state_dict"])
    return model.eval().to(device), cfg


# ----------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class PersonResult:
    """One person's prediction. iuv (3, H, W) and mask (H, W) in crop px; verts (V, 3) camera-frame
    metres or None; kp2d (17, 3) COCO-17 image px + score or None; the crop it came from."""

    crop: Crop
    iuv: Tensor | None
    mask: Tensor | None
    verts: Tensor | None
    kp2d: Tensor | None


class Predictor:
    """A method applied to (image, box) pairs: crop, forward, predict, back to image coordinates."""

    def __init__(self, model: BaseMethod, focal: float | None = None) -> None:
        self.model = model.eval()
        self.focal = focal

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: list[np.ndarray | None] | None = None) -> list[PersonResult]:
        """One result per box (None or no boxes: the whole image is the box)."""
        boxes = boxes or [None]
        crops = [crop_person(image, box, tuple(self.model.image_size), self.focal) for box in boxes]
        batch = inference_batch(crops, self.device)
        out = self.model(self.model.network_input(batch, None))  # a photograph has no targets
        pred = self.model.predict(out, batch)
        return [_person(pred, i, crop) for i, crop in enumerate(crops)]


def _person(pred: Prediction, i: int, crop: Crop) -> PersonResult:
    kp2d = None
    if pred.kp2d is not None:
        kp = pred.kp2d[i].detach().float().cpu()
        xy = apply_affine(invert_affine(crop.affine), kp[:, :2].numpy().astype(np.float64))
        kp2d = torch.cat([torch.from_numpy(xy).float(), kp[:, 2:]], dim=-1)
    return PersonResult(
        crop=crop,
        iuv=None if pred.iuv is None else pred.iuv[i].detach().float().cpu(),
        mask=None if pred.mask is None else pred.mask[i].detach().float().cpu(),
        verts=None if pred.verts is None else pred.verts[i].detach().float().cpu(),
        kp2d=kp2d,
    )
