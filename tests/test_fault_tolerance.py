"""Training that survives faults: replayable epochs, restored random state, atomic checkpoints,
non-finite losses, and a run killed with SIGKILL mid-epoch that resumes to the same result."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import write_tiny_synthetic
from torch import nn
from torch.utils.data import DataLoader, Dataset

from datamodules.benchmark import write_fixture_dataset
from datamodules.datamodule import DenseHMRDataModule
from densehmr.fault import (
    AtomicCheckpointIO,
    Draw,
    EpochDraws,
    NonFiniteLossError,
    NonFinitePolicy,
    RandomState,
    SeededDraws,
    TrainPosition,
    check_loss,
    resume_position,
)
from densehmr.methods.base import BaseMethod, Prediction

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- replayable epochs
def test_epoch_draws_depend_only_on_seed_and_epoch_and_resume_skips_what_was_seen():
    weights = torch.tensor([0.5, 0.25, 0.125, 0.125])
    sampler = EpochDraws(weights, 40, seed=7)
    epoch0 = [(int(d), d.seed) for d in sampler]
    sampler.set_epoch(1)
    epoch1 = [(int(d), d.seed) for d in sampler]
    assert epoch0 != epoch1 and len(epoch0) == len(sampler) == 40
    assert len({s for _, s in epoch0 + epoch1}) == 80  # every draw its own augmentation seed

    resumed = EpochDraws(weights, 40, seed=7)
    resumed.start(1, 12)
    assert [(int(d), d.seed) for d in resumed] == epoch1[12:] + epoch1[:12]  # the rest first
    assert [(int(d), d.seed) for d in resumed] == epoch1  # the skip is for the first iteration only
    other = EpochDraws(weights, 40, seed=8)
    assert [(int(d), d.seed) for d in other] != epoch0


def test_resumed_draws_deal_each_rank_the_rest_of_its_share():
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    world, batch, done = 3, 2, 4  # each rank trained 4 batches of 2 before the kill

    def rank_draws(rank: int, skip: int) -> list[tuple[int, int]]:
        sampler = EpochDraws(torch.ones(10), 60, seed=1)
        sampler.start(2, skip)
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
        return [(int(d), d.seed) for d in wrapper]

    for rank in range(world):
        whole = rank_draws(rank, 0)
        assert rank_draws(rank, done * batch * world)[: len(whole) - done * batch] == whole[done * batch :]


def test_epoch_draws_follow_the_weights():
    sampler = EpochDraws(torch.tensor([0.75, 0.25]), 8000, seed=0)
    drawn = np.fromiter(iter(sampler), dtype=np.int64)
    assert abs((drawn == 0).mean() - 0.75) < 0.02


def test_a_draw_is_an_int_that_keeps_its_seed_through_pickle():
    draw = pickle.loads(pickle.dumps(Draw(5, 2**61 + 3)))
    assert draw == 5 and isinstance(draw, int) and draw.seed == 2**61 + 3
    assert [10, 11, 12, 13, 14, 15][draw] == 15


class _SeedEcho(Dataset):
    """Returns what the real datasets key their augmentation on: torch's seed, and a draw from torch."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index):
        return index, torch.initial_seed(), float(torch.rand(()))


def test_seeded_draws_are_reproducible_in_any_order_and_leave_the_global_generator_alone():
    data = SeededDraws(_SeedEcho())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = data[Draw(1, 11)], data[Draw(1, 22)]
    assert torch.equal(torch.get_rng_state(), before)
    assert data[Draw(1, 22)] == b and data[Draw(1, 11)] == a and a[1] == 11 and a[2] != b[2]
    assert data[2][0] == 2  # plain indices pass through


def _train_batches(datamodule: DenseHMRDataModule) -> list[dict]:
    return list(datamodule.train_dataloader())


def test_a_resumed_epoch_replays_the_remaining_batches_exactly(tmp_path):
    from test_transforms import fake_body

    body = fake_body(tmp_path / "body")
    root = write_fixture_dataset(tmp_path / "data", num_images=4, people_per_image=2, image_hw=(64, 80))
    spec = {"name": "f", "root": str(root), "densepose_json": "densepose_train.json", "smpl_npz": "smpl_train.npz"}

    def datamodule(workers: int) -> DenseHMRDataModule:
        dm = DenseHMRDataModule(train=[spec], image_size=(32, 32), batch_size=2, num_workers=workers, body=body,
                                samples_per_epoch=8, augment={"enabled": True, "occlusion_prob": 0.5})
        dm.setup("fit")
        return dm

    full = datamodule(0)
    loader = full.train_dataloader()
    loader.sampler.set_epoch(1)
    epoch1 = list(loader)
    resumed = datamodule(2)  # other processes: the draws' seeds travel with them to the workers
    loader = resumed.train_dataloader()
    loader.sampler.start(1, 2 * 2)  # two batches of epoch 1 trained before the kill
    tail = list(loader)[:2]  # the trainer stops after the epoch's 4 batches
    assert len(epoch1) == 4
    for want, got in zip(epoch1[2:], tail, strict=True):
        assert want.keys() == got.keys()
        for key in want:
            if isinstance(want[key], torch.Tensor):
                assert torch.equal(want[key], got[key]), key
    flips = torch.stack([b["image"] for b in epoch1]).flatten(0, 1)
    assert not torch.equal(flips[0], flips[1])  # augmentation is on: the samples differ


def test_train_position_follows_the_batches_and_survives_a_checkpoint():
    position = TrainPosition()
    trainer = SimpleNamespace(current_epoch=0, num_training_batches=3, callbacks=[position])
    assert resume_position(trainer) == (0, 0) and resume_position(None) == (0, 0)
    position.on_train_epoch_start(trainer, None)
    for expected in [(0, 1), (0, 2), (1, 0)]:  # after the last batch: the next epoch's start
        position.on_train_batch_end(trainer, None, None, None, 0)
        assert resume_position(trainer) == expected
    trainer.current_epoch = 1
    position.on_train_epoch_start(trainer, None)
    position.on_train_batch_end(trainer, None, None, None, 0)
    restored = TrainPosition()
    restored.load_state_dict(position.state_dict())
    assert resume_position(SimpleNamespace(callbacks=[restored])) == (1, 1)


# ----------------------------------------------------------------------------- random state
def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(0)
    np.random.seed(1)
    random.seed(2)
    torch.rand(3), np.random.rand(3), random.random()  # move off the seeds
    state = RandomState().state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    RandomState().load_state_dict(torch.load(path, weights_only=True))
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


# ----------------------------------------------------------------------------- atomic checkpoints
def test_atomic_checkpoint_replaces_whole_files_and_survives_an_interrupted_write(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    def dies_halfway(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # a kill arriving mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left behind
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3


# ----------------------------------------------------------------------------- non-finite losses
def test_check_loss_names_the_step_and_the_term():
    module = SimpleNamespace(_trainer=None, global_step=12, current_epoch=3)
    ok = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    assert check_loss(module, torch.tensor(3.0), ok, "raise")
    bad = {"a": torch.tensor(1.0), "uv": torch.tensor(float("nan")), "c": torch.tensor(float("inf"))}
    with pytest.raises(NonFiniteLossError) as info:
        check_loss(module, torch.tensor(float("nan")), bad, "raise")
    message = str(info.value)
    assert "step 12" in message and "uv=nan" in message and "c=inf" in message and "a=" not in message
    assert "\n" not in message
    assert not check_loss(module, torch.tensor(float("nan")), bad, "skip")
    with pytest.raises(ValueError, match="nonfinite"):
        NonFinitePolicy("ignore")


class _Poisonable(BaseMethod):
    """A linear regressor whose loss is NaN on batches flagged `poison`."""

    name = "poisonable"

    def __init__(self) -> None:
        super().__init__(body={"name": "open"}, loss_weights={"fit": 1.0},
                         optimizer={"_target_": "torch.optim.Adam", "lr": 0.1}, scheduler=None, image_size=(4, 4),
                         log_images_every_n_steps=0, densepose_kappa="per_part", densepose_protocol=None)
        self.linear = nn.Linear(3, 1)

    def forward(self, image):
        return {"y": self.linear(image.mean((2, 3)))}

    def loss_terms(self, out, batch, targets):
        loss = (out["y"][:, 0] - batch["target"]).pow(2).mean()
        return {"fit": torch.where(batch["poison"].any(), torch.full_like(loss, float("nan")), loss)}

    def predict(self, out, batch, targets=None):
        return Prediction()


def _batches(poisoned: set[int], keep: list[int]) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(4):
        batch = {"image": torch.randn(2, 3, 4, 4, generator=g), "target": torch.randn(2, generator=g),
                 "poison": torch.full((2,), i in poisoned)}
        out.append(batch)
    return [out[i] for i in keep]


def _fit(batches: list[dict], policy: str) -> _Poisonable:
    torch.manual_seed(0)
    model = _Poisonable()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                         callbacks=[NonFinitePolicy(policy)])
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(model, train_dataloaders=loader)
    return model


def test_a_nan_loss_stops_training_with_the_step_and_term_by_default():
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*fit=nan"):
        _fit(_batches({2}, [0, 1, 2, 3]), "raise")


def test_skipping_a_nan_batch_equals_training_without_it():
    skipped = _fit(_batches({2}, [0, 1, 2, 3]), "skip")
    without = _fit(_batches(set(), [0, 1, 3]), "skip")
    assert all(torch.isfinite(p).all() for p in skipped.parameters())
    for a, b in zip(skipped.parameters(), without.parameters(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- kill -9 and resume
STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, body):
    return write_tiny_synthetic(tmp_path_factory.mktemp("synthetic"), body, train=6, val=2, size=64)


class PauseAt(pl.Callback):
    """Test helper: at the start of training step `s` for each s in `steps`, the first time only (no
    `<markers>/<s>` file yet), create that file and wait to be killed."""

    def __init__(self, steps: list[int], markers: str) -> None:
        self.steps, self.markers = set(steps), Path(markers)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        marker = self.markers / str(trainer.global_step)
        if trainer.global_step in self.steps and not marker.exists():
            marker.touch()
            time.sleep(600)


def _train_command(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "densehmr.train", "method=dct", "backbone=mobilenet_v2", "image_size=[64,64]",
        f"data.train.0.root={data / 'train'}", f"data.val.0.root={data / 'val'}", "data.num_workers=0",
        f"data.samples_per_epoch={2 * STEPS_PER_EPOCH}", "method.batch_size=2", "dct.hidden=64",
        "logger=none", "trainer.max_epochs=2", "trainer_extra.checkpoint_every_n_steps=1", "seed=3",
        # A cosine schedule asks for the train DataLoader before the checkpoint is restored (Lightning #20550).
        "scheduler=cosine",
        f"run_dir={run_dir}", *extra,
    ]


# Three epochs of 4 steps. Validation (one batch) at steps 2 and 4 of every second epoch (steps 6 and 8);
# a step checkpoint every 5 steps and one at each epoch end. Each kill leaves a different newest checkpoint:
# (global step at the kill, step of the newest checkpoint, where the kill struck).
KILLS = [
    (4, 4, "right after the end of epoch 0, which has no validation"),
    (6, 5, "right after a mid-epoch validation, whose step is lost"),
    (8, 8, "right after the end of epoch 1 and its validation"),
    (11, 10, "mid-epoch, one trained step lost"),
]
RESUME_SETTINGS = ("trainer.max_epochs=3", "trainer.limit_val_batches=1", "+trainer.val_check_interval=2",
                   "trainer.check_val_every_n_epoch=2", "trainer_extra.checkpoint_every_n_steps=5",
                   "logger=csv", "trainer.log_every_n_steps=1")


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists() or process.poll() is not None, f"no {path.name} within {timeout} s"


def _metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_run_killed_anywhere_resumes_to_the_same_metrics_logs_and_weights(tiny_data, tmp_path):
    # The tests folder on the path: the killed run loads PauseAt from this file (whose import also sets
    # torch's thread count in that process: the run must compute with the count it recorded anyway).
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "tests")}
    whole, killed, markers = tmp_path / "whole", tmp_path / "killed", tmp_path / "paused"
    markers.mkdir()
    steps = ",".join(str(step) for step, _, _ in KILLS)
    pause = f"+trainer_extra.callbacks=[{{_target_:test_fault_tolerance.PauseAt,steps:[{steps}],markers:'{markers}'}}]"
    quiet = dict(cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a = subprocess.Popen(_train_command(tiny_data, whole, *RESUME_SETTINGS), **quiet)
    b = subprocess.Popen(_train_command(tiny_data, killed, *RESUME_SETTINGS, pause), **quiet)
    last = killed / "checkpoints" / "last.ckpt"
    for step, saved_at, where in KILLS:
        _wait_for(markers / str(step), b)
        b.send_signal(signal.SIGKILL)
        assert b.wait() == -signal.SIGKILL, f"the run ended before it could be killed at step {step}"
        state = torch.load(last, map_location="cpu", weights_only=True)
        assert state["global_step"] == saved_at, where
        assert not (killed / "metrics.json").exists()
        b = subprocess.Popen([sys.executable, "-m", "densehmr.train", "method=dct", f"resume={killed}"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out[-2000:]
    assert f"Restoring states from the checkpoint path at {last}" in out
    assert a.wait(timeout=600) == 0

    want = json.loads((whole / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert "mesh/pve" in want and "densepose/gps_ap" in want and "val/mesh/pve" in want
    assert want.pop("run/wall_s") > 0 and got.pop("run/wall_s") > 0  # the only key a kill may change
    assert want == got and want["run/steps"] == want["run/max_steps"] == 12
    final = sorted((whole / "checkpoints").glob("epoch=*.ckpt"))[-1].name
    w = torch.load(whole / "checkpoints" / final, weights_only=True)["state_dict"]
    k = torch.load(killed / "checkpoints" / final, weights_only=True)["state_dict"]
    assert w.keys() == k.keys() and all(torch.equal(w[n], k[n]) for n in w)
    assert _metrics_rows(killed) == _metrics_rows(whole)  # every row logged before each kill, none twice


def test_resume_refuses_a_folder_without_a_run_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "densehmr.train", f"resume={tmp_path}"], cwd=ROOT,
                         env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert lines == [f"error: resume={tmp_path}: no config.yaml in that run folder"]


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_naming_step_and_term(tiny_data, tmp_path):
    # Adam at lr 1e30 sends every weight to ~1e30 in one step: the next loss overflows.
    command = _train_command(tiny_data, tmp_path / "run", "method=densereg", "optimizer.lr=1e30")
    command = [c for c in command if not c.startswith(("method=dct", "dct."))]
    out = subprocess.run(command, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True,
                         text=True, timeout=600)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(lines) == 1 and "non-finite loss at step 1 (epoch 0)" in lines[0], lines
    assert "part_ce=nan" in lines[0] or "part_ce=inf" in lines[0]
