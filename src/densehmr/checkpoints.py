"""Checkpoints that are verified: a digest written into each one, checked with the file on every load.

`seal` adds a SHA-256 digest of a checkpoint's whole contents (every tensor bytewise, every other value
by its repr) under `DIGEST_KEY`; the run's checkpoint writer seals everything it writes. `load_checkpoint`
refuses, with one line naming the file and the problem (CheckpointError):
- an empty or truncated file, or one that is not torch.save's zip archive;
- a record whose bytes no longer match the CRC-32 the archive holds for it (bytes rotted on disk);
- contents whose digest differs from the one written with them (changed after they were saved);
- weights (`state_dict` floating-point tensors) that are NaN or infinite.
Checkpoints written before digests existed are checked for all but the digest.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

DIGEST_KEY = "densehmr_sha256"
_STEP = re.compile(r"step=(\d+)")


class CheckpointError(ValueError):
    """A checkpoint that must not be used; the message (one line) names the file and what is wrong."""


def content_digest(value: Any) -> str:
    """SHA-256 (hex) of a checkpoint's contents, as loaded back by torch.load: the same before saving
    and after loading, whatever the file's layout."""
    digest = hashlib.sha256()
    _update(digest, value)
    return digest.hexdigest()


def _update(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"map {len(value)};".encode())
        for key, item in value.items():
            digest.update(f"{type(key).__name__} {key!r}:".encode())
            _update(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq {len(value)};".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def seal(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` with the digest of its contents added (a new dict; the tensors are shared)."""
    body = {k: v for k, v in checkpoint.items() if k != DIGEST_KEY}
    return {**body, DIGEST_KEY: content_digest(body)}


def load_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool | None = True) -> dict[str, Any]:
    """The verified contents of the checkpoint at `path` (without the digest). CheckpointError if the file
    is missing, empty, truncated, corrupted, changed after saving, or holds non-finite weights."""
    path = Path(path)
    _check_archive(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # whatever fails to unpickle is, to the user, a broken file
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(checkpoint).__name__}, not a checkpoint")
    written = checkpoint.pop(DIGEST_KEY, None)
    if written is not None and written != content_digest(checkpoint):
        raise CheckpointError(f"checkpoint {path}: contents differ from the digest written with them "
                              "(changed or corrupted after saving)")
    _check_finite(path, checkpoint.get("state_dict") or {})
    return checkpoint


def _check_archive(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path}: truncated or not a checkpoint ({size} bytes; {exc})") from exc
    except zipfile.LargeZipFile as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable archive ({exc})") from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {path}: corrupted (record {bad} fails its CRC-32)")


def _check_finite(path: Path, state_dict: Mapping[str, Any]) -> None:
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(f"checkpoint {path}: non-finite weights in {name} ({bad} of {value.numel()} "
                                      "values NaN or infinite)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def newest_good_checkpoint(folder: Path) -> tuple[Path, list[str]]:
    """The newest checkpoint in `folder` that verifies: `last.ckpt`, else the kept `*step=N*.ckpt` with
    the highest N. Also the problems of the newer ones passed over (one line each). CheckpointError if
    none verifies."""
    candidates = [folder / "last.ckpt"] if (folder / "last.ckpt").exists() else []
    kept = [p for p in folder.glob("*.ckpt") if p.name != "last.ckpt" and _STEP.search(p.name)]
    candidates += sorted(kept, key=lambda p: int(_STEP.search(p.name).group(1)), reverse=True)
    problems = []
    for path in candidates:
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        return path, problems
    found = "; ".join(problems) if problems else "no checkpoint in it"
    raise CheckpointError(f"{folder}: no usable checkpoint ({found})")
