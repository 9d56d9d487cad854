"""Backbone weights shipped inside the package (`backbone.pretrained=<kind>`), each with its card.

`pretrained/<backbone>_<kind>.pt` holds the backbone's state dict (fp16); `pretrained/<backbone>_<kind>.json` is its
card: how it was made (`python -m densehmr.pretrain`), its held-out metrics and the file's sha256, verified on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "pretrained"
KINDS = ("none", "synthetic")


def weights_path(backbone: str, kind: str) -> Path:
    return FOLDER / f"{backbone}_{kind}.pt"


def card_path(backbone: str, kind: str) -> Path:
    return FOLDER / f"{backbone}_{kind}.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def available(kind: str = "synthetic") -> list[str]:
    """Backbones with shipped `kind` weights."""
    return sorted(p.stem[: -len(kind) - 1] for p in FOLDER.glob(f"*_{kind}.pt"))


def shipped_weights(backbone: str, kind: str) -> Path | None:
    """The verified file of `kind` weights for `backbone`; None for kind "none".

    Raises ValueError (one line) for an unknown kind, a backbone without such weights, or a file whose sha256
    differs from its card's.
    """
    if kind not in KINDS:
        raise ValueError(f"backbone.pretrained={kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "none":
        return None
    path, card = weights_path(backbone, kind), card_path(backbone, kind)
    if not path.is_file() or not card.is_file():
        have = ", ".join(available(kind)) or "none"
        raise ValueError(
            f"backbone.pretrained={kind}: no {kind} weights ship for {backbone} (they do for: {have}); "
            f"use backbone.pretrained=none, backbone.weights=<file>, "
            f"or make them with `make pretrain BACKBONE={backbone}`"
        )
    expected = json.loads(card.read_text())["sha256"]
    if sha256(path) != expected:
        raise ValueError(f"{path}: sha256 differs from its card {card.name} (a damaged or replaced file)")
    return path
