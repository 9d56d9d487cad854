"""Shared fixtures."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def body():
    """The committed open body (loaded once per test session)."""
    from densehmr.body import load_body

    return load_body("open")


def write_tiny_synthetic(root, body, train: int = 8, val: int = 4, size: int = 128):
    """A tiny synthetic benchmark (train/ and val/ splits) under root, for end-to-end runs."""
    from datamodules.synthetic import generate

    generate(root / "train", "train", train, size, seed=0, body=body, progress=False)
    generate(root / "val", "val", val, size, seed=0, body=body, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory, body):
    """8 train and 4 val images at 128 px, written once per test session."""
    return write_tiny_synthetic(tmp_path_factory.mktemp("synthetic"), body)
