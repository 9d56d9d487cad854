"""DensePose results' `iuv` field: a base64 PNG of the box's (h, w, 3) uint8 [I, U·255, V·255]."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def encode_iuv_png(iuv: np.ndarray) -> str:
    """(3, h, w) uint8 [I, U·255, V·255] -> base64 PNG text (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(iuv, dtype=np.uint8).transpose(1, 2, 0))).save(
        buffer, "PNG"
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_iuv_png(text: str) -> np.ndarray:
    """base64 PNG text -> (3, h, w) uint8 [I, U·255, V·255]."""
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))
    return np.ascontiguousarray(image.transpose(2, 0, 1))
