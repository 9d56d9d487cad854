"""Load pretrained backbone weights from a local checkpoint file (never downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

_WRAPPER_KEYS = ("state_dict", "model")
_LISTED_KEYS = 40


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint, with training wrappers removed.

    Accepts a plain state dict or a dict holding it under 'state_dict' or 'model'. Drops a leading
    'module.' (DataParallel / DDP); when some keys start with 'backbone.' (a whole detector or pose
    model, e.g. mmpose/mmdet), keeps only those, without the prefix.
    """
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: holds more than tensors and plain containers, so it is not read (unsafe to unpickle); "
            "re-save only its state dict with torch.save(model.state_dict(), path)"
        ) from error
    while isinstance(checkpoint, dict):
        wrapper = next((key for key in _WRAPPER_KEYS if isinstance(checkpoint.get(key), dict)), None)
        if wrapper is None:
            break
        checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a state dict (found {type(checkpoint).__name__})")
    state = {_strip(key, "module."): value for key, value in checkpoint.items() if isinstance(value, Tensor)}
    if any(key.startswith("backbone.") for key in state):
        state = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    return state


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LISTED_KEYS]
    more = f", ... ({len(items) - len(shown)} more)" if len(items) > len(shown) else ""
    return f"{title} ({len(items)}): {', '.join(shown)}{more}"


def load_backbone_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local checkpoint into model, requiring every tensor to match by name and shape.

    Classification-head keys of the architecture (model.head_prefixes, e.g. torchvision's 'fc.*') are
    dropped when the model was built without that head. A missing 'num_batches_tracked' counter (old
    torchvision files) keeps the model's. Returns the dropped head keys.
    Raises ValueError naming the file and listing missing keys, unexpected keys and shape mismatches.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    head_prefixes = tuple(getattr(model, "head_prefixes", ()))
    dropped = sorted(key for key in state if key not in expected and key.startswith(head_prefixes))
    state = {key: value for key, value in state.items() if key not in dropped}
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} file {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            _listing(title, items)
            for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", mismatched))
            if items
        ]
        raise ValueError(f"{path}: weights do not fit {type(model).__name__}; " + "; ".join(problems))
    for key, value in expected.items():
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)
    return dropped
