"""The notebooks run from a fresh clone: every cell executes, and they show what they promise."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 600  # a hung cell fails the test instead of the suite
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook at `path` executed from its own folder (any cell's error raises)."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    os.environ.setdefault("WANDB_MODE", "disabled")
    client.execute()
    return book


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


def shows_the_body_and_data(book: nbformat.NotebookNode) -> None:
    assert len(outputs(book, "image/jpeg")) == 3  # the body, the synthetic people, the batch crops
    tables = "".join(outputs(book, "text/markdown"))
    assert "low-poly vertices" in tables and "| dp_xy |" in tables


def shows_runs_and_predictions(book: nbformat.NotebookNode) -> None:
    table = "".join(outputs(book, "text/markdown"))
    assert "| metric | densereg | meshpose |" in table and "| mesh/pve |" in table
    assert outputs(book, "image/jpeg")  # the predictions drawn
    assert "meshpose person.jpg vertices:" in "".join(outputs(book, "stream"))


# What a notebook shows beyond running clean, by file stem. A notebook without an entry is still
# executed and must show something.
PROMISES = {
    "01_open_body_and_data": shows_the_body_and_data,
    "02_runs_and_predictions": shows_runs_and_predictions,
}


def test_every_notebook_is_tested():
    """The notebooks are found (each then executed below), each is a valid notebook with code to run,
    and every promise names one of them (a renamed notebook does not silently lose its checks)."""
    assert NOTEBOOK_FILES, f"no notebooks in {NOTEBOOKS}"
    for path in NOTEBOOK_FILES:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert any(cell.cell_type == "code" and cell.source.strip() for cell in book.cells), path.name
    assert set(PROMISES) <= {path.stem for path in NOTEBOOK_FILES}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda path: path.stem)
def test_notebook_runs_clean_and_shows_what_it_promises(path):
    book = execute(path)
    assert any(cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), "it shows nothing"
    PROMISES.get(path.stem, lambda _: None)(book)
