"""DensePose result entries: each one's IUV over its box, read from either layout, written in the official one.

- DensePose's official results format (its COCO challenge's `results_format.md`): `uv_shape`
  [3, h, w] and `uv_data`, a base64 PNG of the (h, w, 3) uint8 [I, U·255, V·255] (the base64 text may
  hold line breaks, as Python 2's encoder wrote them);
- this project's shorter one: `iuv`, the same PNG without the shape.

Either way the map covers the result's box at int(h) x int(w) pixels, where DensePose's evaluator
reads it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from densehmr.metrics.iuv_png import decode_iuv_png, encode_iuv_png


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file, the record and the field."""


def require(record: Mapping, fields: tuple[str, ...], where: str) -> None:
    """Raise ResultsError naming the first of `fields` that `record` lacks."""
    if not isinstance(record, Mapping):
        raise ResultsError(f"{where}: not a JSON object")
    for name in fields:
        if name not in record:
            raise ResultsError(f"{where}: no field {name!r}")


def box_shape(bbox, where: str) -> tuple[int, int, int]:
    """(3, int(h), int(w)) of an [x, y, w, h] box, the IUV shape DensePose's evaluator indexes."""
    try:
        _, _, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: field 'bbox' must be [x, y, w, h], got {bbox!r}") from None
    return 3, int(h), int(w)


def result_iuv(record: Mapping, where: str) -> np.ndarray:
    """(3, int(h), int(w)) uint8 [I, U·255, V·255] of a result in either layout, checked against its box."""
    require(record, ("bbox",), where)
    if "uv_data" in record:
        require(record, ("uv_shape",), where)
        field = "uv_data"
    elif "iuv" in record:
        field = "iuv"
    else:
        raise ResultsError(f"{where}: no field 'uv_data' (with 'uv_shape') or 'iuv'")
    try:
        iuv = decode_iuv_png(record[field])
    except Exception as exc:
        raise ResultsError(f"{where}: field {field!r} is not a base64 PNG ({exc})") from None
    expected = box_shape(record["bbox"], where)
    if field == "uv_data" and [int(v) for v in record["uv_shape"]] != list(iuv.shape):
        raise ResultsError(f"{where}: field 'uv_shape' is {list(record['uv_shape'])}, the PNG is {list(iuv.shape)}")
    if iuv.shape != expected:
        raise ResultsError(f"{where}: field {field!r} is {list(iuv.shape)}, its box needs {list(expected)}")
    return iuv


def official_result(detection: Mapping, iuv: np.ndarray) -> dict:
    """The detection (image_id, category_id, bbox, score) with its IUV (3, h, w) uint8 as `uv_shape`
    and `uv_data`, DensePose's official results entry."""
    return {
        "image_id": detection["image_id"],
        "category_id": detection["category_id"],
        "bbox": [float(v) for v in detection["bbox"]],
        "score": float(detection["score"]),
        "uv_shape": list(iuv.shape),
        "uv_data": encode_iuv_png(iuv),
    }
