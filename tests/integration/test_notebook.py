"""The exploration notebook runs top to bottom against the package (so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "exploration.ipynb"


@pytest.mark.slow
def test_exploration_notebook_executes(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFIT_NOTEBOOK_ROWS", "40000")
    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "clean rows" in text and "raw rows" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
