"""The benchmark harness (benchmarks/harness.py) runs end to end on tiny windows: its
table has the rows and columns it promises, and its dated section goes into a copy of the
log page, docs/benchmarks-log.md, in --out, never into the real log nor into
docs/benchmarks.md (the reference page). Not a timed test: no figure is checked, only
that each was measured."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "benchmarks" / "harness.py"
DOCS = REPO / "docs" / "benchmarks.md"
LOG = REPO / "docs" / "benchmarks-log.md"
STEPS = ("ingest", "featurize", "split", "train", "score", "chart")
QUICK_WINDOWS = (7, 10, 14)

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_core import LOG as LOG_NAME  # noqa: E402
from bench_core import ROW_COLUMNS, SECTION, TARGET_COLUMNS, insert_run  # noqa: E402


def table_rows(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The body rows of the first markdown table in ``text`` whose header is ``header``."""
    lines = text.splitlines()
    head = "| " + " | ".join(header) + " |"
    start = lines.index(head)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        inner = line.strip()[1:-1]  # without the outer pipes; cells escape their own
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", inner)])
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench-out")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLIGHT_DELAYS_"))}
    env.update(OMP_NUM_THREADS="1", FLIGHT_DELAYS_THREADS="1")
    before = {page: hashlib.sha256(page.read_bytes()).hexdigest() for page in (DOCS, LOG)}
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "--quick",
            "--only",
            "steps,windows,dev-loop,ingest,rows",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for page, digest in before.items():
        assert hashlib.sha256(page.read_bytes()).hexdigest() == digest, f"{page.name} changed"
    assert not (out / "benchmarks.md").exists(), "the harness writes the log, not the reference"
    return out, result.stdout


def test_quick_run_prints_every_row_with_its_columns(quick_run):
    _, stdout = quick_run
    rows = table_rows(stdout, ROW_COLUMNS)
    assert all(len(row) == len(ROW_COLUMNS) for row in rows), rows
    cases = {row[1]: row for row in rows}
    sections = {row[0] for row in rows}
    assert sections == {"steps", "windows", "dev loop", "ingest", "rows"}, sections
    for name in ("six steps in one process", "`airflow dags test`"):
        row = next(r for c, r in cases.items() if c.startswith(name))
        seconds, peak = float(row[2]), float(row[4])
        assert seconds > 0 and peak > 50, row  # measured: a Python process holds > 50 MiB
    assert any(c.startswith("Airflow's fixed cost") for c in cases)
    for window in QUICK_WINDOWS:
        assert any(c.startswith(f"{window}-day window") and "end to end" in c for c in cases)
        for step in STEPS:
            row = cases[f"{window} days: {step}"]
            assert float(row[2]) >= 0 and float(row[4]) > 0 and row[5], row
    for step in STEPS:
        assert f"in process: {step}" in cases
    # the rows section: each step on the real and the synthetic (2x) warehouse
    for factor in (1, 2):
        for step in STEPS:
            row = cases[f"x{factor}, 7 days: {step}"]
            assert float(row[2]) >= 0 and float(row[4]) > 50 and row[5], row
    # the developer loop: the step alone, and through each command
    assert float(cases["split: the step's own time (run(), in one process)"][2]) > 0
    for command in ("make step S=split", "make task T=split"):
        row = next(r for c, r in cases.items() if c.startswith(f"`{command} DAY="))
        assert "s over own time" in row[6], row
    # ingest: SQLite always; PostgreSQL with the row-by-row read beside it
    for case in ("SQLite: range read", "PostgreSQL: range read", "PostgreSQL: ingest step"):
        row = next(r for c, r in cases.items() if c.startswith(case))
        assert float(row[2]) > 0 and row[5], row


def test_quick_run_judges_the_targets_it_measured_and_skips_the_stack(quick_run):
    _, stdout = quick_run
    targets = {row[0]: row for row in table_rows(stdout, TARGET_COLUMNS)}
    measured = [name for name, row in targets.items() if "not measured" not in row[2]]
    assert any(name.startswith("Airflow's fixed cost") for name in measured), targets
    assert any(name.startswith("14-day window end to end") for name in measured), targets
    assert any(name.startswith("cost linear in rows") for name in measured), targets
    for name in (
        "every step ≤ 2 GB at 2x",
        "featurize ≥ 200k rows/s at 2x",
        "`make step S=split` ≤ 1.5 s",
        "`make task T=split` ≤ 6.0 s",
        "ingest's range read from PostgreSQL",
    ):
        assert any(n.startswith(name) for n in measured), targets
    for name in measured:
        assert re.search(r"\*\*(met|not met)\*\*", targets[name][2]), targets[name]
    live = next(row for name, row in targets.items() if "live stack" in name)
    assert live[1] == "skipped (--quick)" and live[2] == "not measured"


def runs_of(doc: str) -> tuple[str, str]:
    """(the document before the harness section, the section's runs: from its first
    dated subsection to its end); ("", "") parts when there are none."""
    if f"\n{SECTION}\n" not in doc:
        return doc, ""
    before, section = doc.split(f"\n{SECTION}\n", 1)
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    first = re.search(r"^### ", section, flags=re.M)
    return before, section[first.start() :] if first else ""


def test_the_harness_writes_its_runs_to_the_log_page():
    assert LOG.name == LOG_NAME and LOG.exists()
    assert f"\n{SECTION}\n" in LOG.read_text(), "the log holds the harness's runs"
    assert f"\n{SECTION}\n" not in DOCS.read_text(), "the reference page holds no dated runs"


def test_quick_run_adds_its_section_to_a_copy_of_the_log(quick_run):
    out, _ = quick_run
    doc = (out / LOG.name).read_text()
    before, old_runs = runs_of(LOG.read_text())
    assert doc.startswith(before), "the copy must keep the rest of the log as it is"
    _, runs = runs_of(doc)
    titles = re.findall(r"^### (.+)$", runs, flags=re.M)
    assert len(titles) == len(re.findall(r"^### ", old_runs, flags=re.M)) + 1, titles
    newest = runs[: runs.index(old_runs)] if old_runs else runs
    assert runs.endswith(old_runs), "older runs must stay as they were, after the new one"
    assert "Machine: " in newest and "load average at start" in newest
    assert newest.count("| target | measured | met |") == 1, newest


def test_a_new_run_goes_first_and_older_runs_stay_as_they_were():
    doc = "# Benchmarks\n\n## Other\ntext\n"
    once = insert_run(doc, "### run 1\n\nfirst\n")
    assert once.startswith(doc.rstrip("\n")) and once.index(SECTION) < once.index("### run 1")
    twice = insert_run(once + "\n## Later section\nmore\n", "### run 2\n\nsecond\n")
    assert twice.index("### run 2") < twice.index("### run 1") < twice.index("## Later section")
    assert "### run 1\n\nfirst\n" in twice and twice.count(SECTION) == 1


def test_the_year_runs_only_when_asked_for_and_takes_stack_settings():
    import harness

    assert "year" not in harness.parse_args([]).sections  # about an hour: by name only
    args = harness.parse_args(
        ["--only", "year", "--slice-days", "12", "--year-days", "0",
         "--stack-setting", "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1"]
    )  # fmt: skip
    assert args.sections == ["year"] and args.stack
    assert (args.slice_days, args.year_days) == (12, 0)
    assert args.stack_setting == ["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1"]


def test_a_stack_setting_without_a_value_is_refused(capsys):
    import harness

    with pytest.raises(SystemExit):
        harness.parse_args(["--only", "year", "--stack-setting", "MIN_HEARTBEAT_INTERVAL"])
    error = capsys.readouterr().err
    assert "--stack-setting takes KEY=value, got 'MIN_HEARTBEAT_INTERVAL'" in error


def test_the_rows_run_only_when_asked_for_and_need_a_factor_of_two_or_more(capsys):
    import harness

    assert "rows" not in harness.parse_args([]).sections  # millions of flights: by name only
    assert harness.parse_args(["--only", "rows"]).factor == 10
    assert harness.parse_args(["--only", "rows", "--quick"]).factor == 2
    with pytest.raises(SystemExit):
        harness.parse_args(["--only", "rows", "--factor", "1"])
    assert "--factor must be >= 2" in capsys.readouterr().err
