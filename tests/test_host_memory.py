"""Retained host memory: a large tensor allocated after others were freed reuses their pages."""

from __future__ import annotations

import resource
import sys

import pytest

from densehmr.bench.methods import run_isolated
from densehmr.host_memory import RetainFreedMemory, retain_freed_memory
from densehmr.runs import build_trainer, compose_train

PAGES = 16384  # a 64 MB float32 tensor in 4 KB pages


def _page_faults_of_later_tensors(retain: bool) -> tuple[bool, int]:
    """(whether retaining applied, minor page faults of filling four 64 MB tensors one after the other,
    each freed before the next, after four such were filled and freed: training steps after the first
    ones). The first steps may each need fresh pages: small allocations in between can take the start of
    freed memory, and how many depends on the interpreter's surroundings (resource limits among them)."""
    import torch

    applied = retain_freed_memory() if retain else False
    for _ in range(4):
        torch.ones(PAGES * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(PAGES * 1024)
    return applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_tensors_reuse_the_pages_of_earlier_ones():
    # Fresh processes: the setting is process-wide and cannot be taken back.
    _, faults_default = run_isolated(_page_faults_of_later_tensors, False)
    applied, faults_retained = run_isolated(_page_faults_of_later_tensors, True)
    if not applied:
        pytest.skip("this C library has no glibc mallopt")
    assert faults_retained < PAGES // 100
    # glibc's default maps fresh pages for each (a page fault each; fewer where transparent huge pages
    # back the mapping).
    assert faults_default > faults_retained


def test_runs_retain_freed_memory_by_default_and_can_opt_out(tmp_path):
    def callbacks(*overrides: str) -> list[type]:
        cfg = compose_train(["logger=none", *overrides])
        return [type(c) for c in build_trainer(cfg, tmp_path, False).callbacks]

    assert RetainFreedMemory in callbacks()
    assert RetainFreedMemory not in callbacks("trainer_extra.retain_freed_memory=false")
