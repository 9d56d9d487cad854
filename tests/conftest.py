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
