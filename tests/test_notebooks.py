"""The notebooks run from a fresh clone: every cell executes, and they show what they promise."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUDGET_S = 120  # each is meant to take well under a minute on 2 free cores; slack for a busy machine


def execute(name: str) -> tuple[nbformat.NotebookNode, float]:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(book, timeout=BUDGET_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    os.environ.setdefault("WANDB_MODE", "disabled")
    start = time.monotonic()
    client.execute()
    return book, time.monotonic() - start


def outputs(book: nbformat.NotebookNode, kind: str) -> list[str]:
    """Every `kind` output (a MIME type, or 'stream' for printed text) of the executed notebook."""
    found = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01_open_body_and_data.ipynb", "02_runs_and_predictions.ipynb",
    ]


@pytest.mark.slow
def test_open_body_and_data_notebook():
    book, seconds = execute("01_open_body_and_data.ipynb")
    assert seconds < BUDGET_S
    assert len(outputs(book, "image/jpeg")) == 3  # the body, the synthetic people, the batch crops
    tables = "".join(outputs(book, "text/markdown"))
    assert "low-poly vertices" in tables and "| dp_xy |" in tables


@pytest.mark.slow
def test_runs_and_predictions_notebook():
    book, seconds = execute("02_runs_and_predictions.ipynb")
    assert seconds < BUDGET_S
    table = "".join(outputs(book, "text/markdown"))
    assert "| metric | densereg | meshpose |" in table and "| mesh/pve |" in table
    assert outputs(book, "image/jpeg")  # the predictions drawn
    assert "meshpose person.jpg vertices:" in "".join(outputs(book, "stream"))
