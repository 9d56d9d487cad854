"""Checkpoints are sealed with a digest and verified on load: a damaged one gives one line naming the file
and the damage, resume falls back to the newest good one and says so, non-finite weights are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from densehmr.checkpoints import (
    DIGEST_KEY,
    CheckpointError,
    content_digest,
    load_checkpoint,
    newest_good_checkpoint,
    seal,
)
from densehmr.fault import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(step: int = 3) -> dict:
    g = torch.Generator().manual_seed(step)
    return {
        "epoch": 1, "global_step": step,
        "state_dict": {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "bn.num_batches_tracked": torch.tensor(5),
                       "half": torch.randn(4, generator=g).to(torch.bfloat16)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}},
                              "param_groups": [{"lr": 1e-3, "params": [0]}]}],
        "callbacks": {"RandomState": {"python": (3, (1, 2, 3), None)}}, "hparams_name": "kwargs",
    }


def _write(path: Path, step: int = 3) -> Path:
    AtomicCheckpointIO().save_checkpoint(_checkpoint(step), path)
    return path


def _record_offset(path: Path, suffix: str) -> int:
    """Offset in the file of the first byte of the zip record whose name ends with `suffix`."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


def test_a_sealed_checkpoint_loads_back_whole_and_its_digest_is_independent_of_the_file(tmp_path):
    path = _write(tmp_path / "a.ckpt")
    raw = torch.load(path, weights_only=True)
    assert raw[DIGEST_KEY] == content_digest(_checkpoint())  # what was sealed is what was asked to be saved
    loaded = load_checkpoint(path)
    assert DIGEST_KEY not in loaded and loaded["global_step"] == 3
    want = _checkpoint()
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in want["state_dict"].items())
    assert content_digest(loaded) == content_digest(want) != content_digest(_checkpoint(4))
    assert seal(seal(want))[DIGEST_KEY] == seal(want)[DIGEST_KEY]  # sealing twice changes nothing


def _message(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path}: ")
    return message[len(f"checkpoint {path}: "):]


def test_empty_truncated_and_foreign_files_are_refused_in_one_line(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    assert _message(empty) == "empty file (0 bytes)"
    whole = _write(tmp_path / "whole.ckpt").read_bytes()
    for cut in (len(whole) // 2, len(whole) - 10, 100):
        truncated = tmp_path / f"cut{cut}.ckpt"
        truncated.write_bytes(whole[:cut])
        assert _message(truncated).startswith(f"truncated or not a checkpoint ({cut} bytes;")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    assert _message(text).startswith("truncated or not a checkpoint")
    assert _message(tmp_path / "absent.ckpt") == "no such file"


def test_rotted_bytes_are_found_by_the_record_crc(tmp_path):
    path = _write(tmp_path / "rot.ckpt")
    offset = _record_offset(path, "data/0")  # conv.weight's storage: its first float becomes 3e38
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = torch.tensor([3e38], dtype=torch.float32).numpy().tobytes()
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["state_dict"]["conv.weight"].flatten()[0] == 3e38  # torch reads it
    assert _message(path).startswith("corrupted (record ") and _message(path).endswith("data/0 fails its CRC-32)")


def test_contents_changed_after_sealing_differ_from_their_digest(tmp_path):
    path = _write(tmp_path / "edited.ckpt")
    state = torch.load(path, weights_only=True)
    state["state_dict"]["conv.weight"][0, 0, 0, 0] = 3e38
    torch.save(state, path)  # a valid archive, with the old digest
    assert _message(path) == "contents differ from the digest written with them (changed or corrupted after saving)"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    state = _checkpoint()
    state["state_dict"]["conv.weight"][1, 2] = bad
    path = tmp_path / "nan.ckpt"
    AtomicCheckpointIO().save_checkpoint(state, path)
    assert _message(path) == "non-finite weights in conv.weight (9 of 216 values NaN or infinite)"


def test_checkpoints_written_before_digests_are_still_checked(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save(_checkpoint(), path)
    assert load_checkpoint(path)["global_step"] == 3
    state = _checkpoint()
    state["state_dict"]["half"][0] = float("nan")
    torch.save(state, path)
    assert _message(path) == "non-finite weights in half (1 of 4 values NaN or infinite)"


def test_the_newest_good_checkpoint_is_found_and_the_bad_ones_named(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        _write(folder / f"epoch={step // 4 - 1}-step={step}.ckpt", step)
    _write(folder / "last.ckpt", 14)
    assert newest_good_checkpoint(folder) == (folder / "last.ckpt", [])
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:1000])
    (folder / "epoch=2-step=12.ckpt").write_bytes(b"")
    path, problems = newest_good_checkpoint(folder)
    assert path == folder / "epoch=1-step=8.ckpt"
    assert [p.split(": ", 1)[1] for p in problems] == ["truncated or not a checkpoint (1000 bytes; File is not a "
                                                       "zip file)", "empty file (0 bytes)"]
    for p in folder.iterdir():
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint \(checkpoint .*last.ckpt: empty file"):
        newest_good_checkpoint(folder)


def test_resume_falls_back_to_the_newest_good_checkpoint_and_says_so(tmp_path, capsys):
    from densehmr.studies.common import compose_train
    from densehmr.train import resumed_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose_train(["method=dct"]), resolve=True))
    good = _write(run / "checkpoints" / "epoch=0-step=4.ckpt", 4)
    (run / "checkpoints" / "last.ckpt").write_bytes(good.read_bytes()[:-30])
    cfg = resumed_config(compose_train(["method=dct", f"resume={run}"]))
    assert cfg.ckpt_path == str(good) and cfg.run_dir == str(run)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: checkpoint {run / 'checkpoints' / 'last.ckpt'}: truncated or not a checkpoint")
    assert err.endswith(f"; resuming from {good} instead") and "\n" not in err


def test_evaluating_a_truncated_checkpoint_is_one_line_and_exit_2(tmp_path):
    path = _write(tmp_path / "bad.ckpt")
    half = len(path.read_bytes()) // 2
    path.write_bytes(path.read_bytes()[:half])
    out = subprocess.run([sys.executable, "-m", "densehmr.evaluate", "method=dct", f"ckpt_path={path}"], cwd=ROOT,
                         env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert lines == [f"error: checkpoint {path}: truncated or not a checkpoint ({half} bytes; File is not a zip file)"]
