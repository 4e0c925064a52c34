"""The README's shell blocks are tests: each ```bash block runs, as a user would paste
it, in a throw-away copy of the project (a tmp project root with a short window in
include/params.yaml and a SQLite warehouse seeded with the real 2013 days the blocks
use), and the days they name have their whole training window inside the data.

Blocks fenced as plain ``` are not run here: `make run` is run by CI from a fresh clone
and `make test` is this suite; their targets are checked to exist.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from doc_blocks import (
    REPO,
    TASKS_TEST,
    make_targets,
    processed_days,
    project_copy,
    run_block,
    shell_blocks,
    window_outside_data,
)

from flight_delays.store.config import load_settings

README = REPO / "README.md"


BLOCKS = shell_blocks(README.read_text())


def test_the_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 3
    assert any("make task" in block for block in BLOCKS)
    assert any("python -m flight_delays run" in block for block in BLOCKS)
    assert any("python -m flight_delays.predict" in block for block in BLOCKS)


def test_every_day_in_the_readme_has_its_window_inside_the_data():
    window_days = load_settings(REPO).ingest.window_days  # the shipped parameters
    days = [day for block in BLOCKS for day in processed_days(block)]
    assert days, "no example day found in the README's bash blocks"
    problems = [p for day in days if (p := window_outside_data(day, window_days))]
    assert problems == []


def test_the_window_check_flags_the_old_example():
    # The README once used 2013-03-15: its 90-day window starts on 2012-12-16.
    assert "2012-12-16" in window_outside_data(date(2013, 3, 15), 90)
    assert window_outside_data(date(2013, 6, 30), 90) is None


def test_every_make_target_the_readme_names_exists():
    text = README.read_text()
    code = "\n".join(shell_blocks(text, language="[a-z]*")) + " ".join(
        re.findall(r"`[^`\n]+`", text)
    )
    named = set(re.findall(r"\bmake (?:-s )?([a-z][a-z-]*)", code))
    assert named >= {"run", "test", "task", "step", "env", "up", "down"}
    assert named - make_targets() == set()


@pytest.fixture(scope="module")
def readme_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the project (code linked) with a short window and a warehouse holding
    the real 2013 days the README's blocks need; the environment of a user's shell."""
    root = tmp_path_factory.mktemp("readme-project")
    env = project_copy(root, [day for block in BLOCKS for day in processed_days(block)])
    return root, env


@pytest.mark.e2e
def test_the_readme_blocks_run_in_order_and_make_every_artifact(readme_project):
    root, env = readme_project
    for block in BLOCKS:
        run_block(root, env, block)
    day = max(day for block in BLOCKS for day in processed_days(block))
    assert (root / "data" / "output" / f"ds={day}" / "metrics.json").is_file()
    assert (root / "reports" / f"ds={day}" / "index.html").is_file()
    # ... and the predictions block served the day it names.
    assert (
        root / "data" / "output" / "predictions" / f"ds={day}" / "predictions.parquet"
    ).is_file()
    # The blocks used this copy, not the checkout they link to.
    assert (root / ".airflow" / "airflow.db").is_file()


@pytest.mark.e2e
def test_a_broken_example_fails_the_test(readme_project):
    root, env = readme_project
    # A day whose window is not in the warehouse: the first task fails, and so does the
    # block, for `make task` (exit status) and for `airflow tasks test` (its log).
    with pytest.raises(AssertionError, match="README block failed"):
        run_block(root, env, "make task T=ingest DAY=2013-02-20\n")
    broken = next(b for b in BLOCKS if "airflow tasks test" in b)
    broken = TASKS_TEST.sub(lambda m: m.group(0).replace(m.group(1), "2013-02-21"), broken)
    with pytest.raises(AssertionError, match="README block failed"):
        run_block(
            root,
            env,
            broken.replace("tasks test flight_delays split", "tasks test flight_delays ingest"),
        )
