"""The task logs stay readable: no warning flood, one summary line per model step."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e

RUN_DATE = "2013-03-23"  # processes the flight day 2013-03-22
# A WARNING line as `airflow tasks test` prints the task's log: Airflow's own format
# ("WARNING - ...") or the task SDK's structured one ("[warning  ] ...").
WARNING_LINE = re.compile(r"\bWARNING\b|\[warning\s*\]")


def warning_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if WARNING_LINE.search(line)]


def test_warning_line_pattern_matches_both_log_formats():
    text = (
        "[2026-01-01 10:00:00] {train.py:1} WARNING - training frame has no value\n"
        "2026-01-01T10:00:00.0Z [warning  ] something odd [flight_delays.train]\n"
        "2026-01-01T10:00:00.0Z [info     ] train 2013-03-22: 100 rows in\n"
    )
    assert len(warning_lines(text)) == 2


def test_the_train_task_log_has_no_warning_flood(project):
    for step in ("ingest", "featurize", "split"):
        project.airflow("tasks", "test", "flight_delays", step, RUN_DATE)
    result = project.airflow("tasks", "test", "flight_delays", "train", RUN_DATE)
    output = result.stdout + result.stderr
    assert "Task failed" not in output, output[-3000:]
    # Before the fix, importing skops after Airflow printed ~1,160 deprecation warnings.
    warnings = warning_lines(output)
    assert len(warnings) < 10, f"{len(warnings)} WARNING lines:\n" + "\n".join(warnings[:20])
    # One summary line with rows in and out and the seconds it took.
    summary = [line for line in output.splitlines() if "train 2013-03-22:" in line]
    assert len(summary) == 1 and re.search(r"\d+ rows in .* out, .* in \d+\.\d s", summary[0])
