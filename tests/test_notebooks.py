"""Every tutorial notebook runs headless in a real kernel against the emulator and shows its images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import API_KEY
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.kernel


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_headless_and_holds_its_images(path, emulator, kernel_env, tmp_path, monkeypatch):
    for name, value in kernel_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NANOBANANA_OUTPUT_DIR")  # the notebooks use the default, relative to their folder
    # dataset.ipynb loads its export with `datasets`: its cache in tmp_path, and no hub to look for.
    monkeypatch.setenv("HF_HOME", str(tmp_path / ".hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    nbformat.write(notebook, tmp_path / path.name)
    text = json.dumps(notebook)
    assert len(re.findall(r"data:image/(?:jpeg|png);base64,", text)) >= 1
    assert API_KEY not in text
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    tagged = [c for c in notebook.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert len(errors) == len(tagged)
    for error in errors:
        assert len(error["traceback"]) == 1, error["traceback"]  # one line, no stack trace
    assert (tmp_path / "nanobanana_outputs" / "runs.jsonl").exists()
