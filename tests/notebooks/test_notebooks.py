"""Notebooks: the naming convention, no committed outputs, and the example runs against
a real processed day with the package's current API."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAME = re.compile(r"^[a-z][a-z0-9]*_\d{2}_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
EXAMPLE = REPO / "notebooks" / "team_01_prototype_vs_champion.ipynb"


def test_there_is_an_example_notebook():
    assert EXAMPLE in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_name_follows_author_number_title(path):
    assert NAME.match(path.name), f"{path.name}: rename to <author>_<NN>_<title>.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


def test_example_notebook_runs_on_a_small_window(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from flight_delays import featurize, ingest, score, split, train
    from flight_delays.intake.demo import seed

    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text(
        "ingest: {window_days: 8}\nsplit: {holdout_days: 2}\ntrain: {max_iter: 30}\n"
    )
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    seed(url, [0], original_range=(date(2013, 5, 1), date(2013, 5, 10)))
    monkeypatch.setenv("FLIGHT_DELAYS_SOURCE_URL", url)
    day = "2013-05-10"
    for step in (ingest, featurize, split, train, score):
        step.run(day, root=tmp_path)

    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    monkeypatch.setenv("NOTEBOOK_DAY", day)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(EXAMPLE, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "2013-05-10:" in printed and "holdout flights" in printed
    assert re.search(r"The prototype (beats|does not beat) the champion", printed)
