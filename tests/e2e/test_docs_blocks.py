"""The shell blocks of docs/*.md are tests (issue 21), as the README's are: every
```bash block runs as a user pastes it, in one throw-away copy of the project
(doc_blocks.py), doc after doc. A block that cannot run here carries a marker with the
reason, and a block that a live test runs names that test (doc_blocks.py says how).

No doc has a plain ``` fence: output, drawings and settings say what they are (text,
ini, sql...), so no command escapes this test without a marker.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from doc_blocks import (
    REPO,
    Block,
    fenced_blocks,
    processed_days,
    project_copy,
    run_block,
    window_outside_data,
)

from flight_delays.store.config import load_settings

DOCS = sorted((REPO / "docs").glob("*.md"))
# The feature guide's ingest runs first: the backups guide then archives its partitions.
FIRST = REPO / "docs" / "guide-add-feature.md"
BLOCKS = [block for doc in sorted(DOCS, key=lambda d: d != FIRST) for block in fenced_blocks(doc)]
SHELL = [block for block in BLOCKS if block.language == "bash"]
# Where the docs start from: after `make run`, whose metastore the guides read. The
# copy gets it without a run: `make run` itself is run by CI from a fresh clone.
SETUP = "make airflow-init"
# A day for the copy's warehouse when no block names one (the feature guide's does).
DEFAULT_DAY = date(2013, 6, 30)

NOT_RUN = re.compile(r"not run: (?P<reason>.+)")
RUN_BY = re.compile(r"run by (?P<test>tests/\S+\.py)")
IN_CHECKOUT = "in the checkout"


def marker_problem(block: Block) -> str | None:
    """What is wrong with ``block``'s docs-test marker, or None."""
    if block.marker is None:
        return None
    if block.language != "bash":
        return f"{block.where}: a docs-test marker on a {block.language or 'plain'} block"
    if block.marker == IN_CHECKOUT:
        return None
    if m := NOT_RUN.fullmatch(block.marker):
        return None if len(m["reason"].split()) >= 3 else f"{block.where}: say why it is not run"
    if m := RUN_BY.fullmatch(block.marker):
        test = REPO / m["test"]
        if not test.is_file():
            return f"{block.where}: {m['test']} does not exist"
        if Path(block.doc).name not in test.read_text():
            return f"{block.where}: {m['test']} does not name {block.doc}"
        return None
    return f"{block.where}: unknown docs-test marker {block.marker!r}"


def runs_here(block: Block) -> bool:
    return block.language == "bash" and (block.marker in (None, IN_CHECKOUT))


def test_the_docs_have_blocks_of_each_kind():
    assert sum(runs_here(b) for b in SHELL) >= 8
    assert any(b.marker and RUN_BY.fullmatch(b.marker) for b in SHELL)
    assert any(b.marker and NOT_RUN.fullmatch(b.marker) for b in SHELL)


def test_no_doc_has_a_plain_fence():
    assert [b.where for b in BLOCKS if b.language == ""] == []


def test_every_marker_says_why_or_names_its_test():
    assert [p for b in BLOCKS if (p := marker_problem(b))] == []


@pytest.mark.parametrize(
    ("marker", "problem"),
    [
        ("not run: later", "say why"),
        ("skip", "unknown docs-test marker"),
        ("run by tests/stack/test_nothing_here.py", "does not exist"),
        ("run by tests/e2e/conftest.py", "does not name docs/x.md"),
    ],
)
def test_a_bad_marker_is_refused(marker: str, problem: str):
    block = Block(doc="docs/x.md", language="bash", body="true\n", marker=marker, line=1)
    assert problem in marker_problem(block)


def test_every_day_in_the_docs_has_its_window_inside_the_data():
    window_days = load_settings(REPO).ingest.window_days  # the shipped parameters
    days = [day for b in SHELL for day in processed_days(b.body)]
    problems = [p for day in days if (p := window_outside_data(day, window_days))]
    assert problems == []


@pytest.mark.e2e
def test_the_docs_blocks_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("docs-project")
    days = [day for b in SHELL for day in processed_days(b.body)] or [DEFAULT_DAY]
    env = project_copy(root, days)
    # A home of its own: a block that forgets the project's Airflow settings would make
    # ~/airflow (Airflow's default home) there, not in the machine's home.
    home = env["HOME"] = str(tmp_path_factory.mktemp("docs-home"))
    run_block(root, env, SETUP, what="the docs' set-up")
    ran = []
    for block in (b for b in SHELL if runs_here(b)):
        where = REPO if block.marker == IN_CHECKOUT else root
        run_block(where, env, block.body, what=f"the block at {block.where}")
        ran.append(block.where)
    assert len(ran) >= 8, ran
    # What the blocks say they make, in the copy.
    backups = root / "backups"
    assert {p.name for p in backups.iterdir()} >= {
        "warehouse.sqlite",
        "airflow.db",
        "artifacts.tar.gz",
    }
    assert (root / "data" / "processed" / "ds=2013-06-30" / "feature_counts.json").is_file()
    assert not (Path(home) / "airflow").exists(), "a block used Airflow's default home"
    # The connections the monitoring guide adds are in the copy's metastore.
    listed = run_block(root, env, 'eval "$(make -s env)"\n.venv/bin/airflow connections list')
    assert "flight_delays_smtp" in listed.stdout and "flight_delays_webhook" in listed.stdout
