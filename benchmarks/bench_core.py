"""How the harness measures and reports. A command runs to its end in a fresh process
of its own session: its wall time, its CPU time (``wait4``) and the peak of its whole
process tree's RSS (sampled every 50 ms: a task Airflow forks counts with its parent,
pages shared after a fork twice, as `ps` counts them). Cases run in turn (A B A B ...),
so a drift of the shared machine hits them alike; the figures are medians."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1024 * 1024
GB_MIB = 1e9 / MIB  # 1 GB = 10^9 bytes, as the targets say
#: The nightly DAG's steps, in order.
STEPS = ("ingest", "featurize", "split", "train", "score", "chart")
ROW_COLUMNS = ("section", "case", "median (s)", "min / max (s)", "peak RSS (MiB)", "rows/s", "note")
TARGET_COLUMNS = ("target", "measured", "met")
LOG = "benchmarks-log.md"  # the page of the dated runs, in docs/ (or --out)
SECTION = "## Benchmark harness runs"
INTRO = """\
Dated runs of `benchmarks/harness.py`, newest first; what each row measures and how:
docs/benchmarks.md, "Benchmark harness".
"""


class CommandFailed(RuntimeError):
    """A measured command exited non-zero or ran out of time; its output's tail is in the
    message."""


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, start to exit
    peak_mib: float  # the process tree's summed RSS, sampled
    output: str  # stdout and stderr, interleaved
    cpu: float = 0.0  # user + system seconds, with the children it waited for


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # it ended between list and read
                total += member.memory_info().rss
    return total


def run(cmd: Sequence[str], env: Mapping[str, str], timeout: float = 3600) -> Run:
    """Run and measure ``cmd``; CommandFailed when it exits non-zero or outlives
    ``timeout`` (its whole process group is then killed)."""
    with tempfile.TemporaryFile(mode="w+", errors="replace") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                while not done.is_set():
                    peak = max(peak, _tree_rss(root))
                    done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def kill() -> None:  # the timeout: the whole session of the command
            if not done.is_set():
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # with the kernel's accounting
        wall = time.perf_counter() - start
        done.set()
        timer.cancel()
        sampler.join()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left in its session
        out.seek(0)
        output = out.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise CommandFailed(
            f"{' '.join(cmd)[:300]} exited {code} after {wall:.0f} s "
            f"(timeout {timeout:.0f} s):\n{output[-4000:]}"
        )
    return Run(wall, peak / MIB, output, usage.ru_utime + usage.ru_stime)


def in_turn(
    cases: Mapping[str, Callable[[], Run]], repeat: int, prepare: Callable[[], None] | None = None
) -> dict[str, list[Run]]:
    """Each case ``repeat`` times, the cases in turn; ``prepare()`` before each one."""
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, case in cases.items():
            if prepare is not None:
                prepare()
            runs[name].append(case())
    return runs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def paired(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The pair-by-pair differences a - b of runs taken in turn."""
    return [x - y for x, y in zip(a, b, strict=True)]


def machine() -> dict[str, str]:
    """The machine the figures come from, with the load average at the start: its host,
    the 1-minute load, its cores, and a line that says it all."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x for x in lines if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        cpu = platform.machine()
    try:
        name = platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        name = platform.system()
    threads = [f"{k}={os.environ[k]}" for k in ("FLIGHT_DELAYS_THREADS", "OMP_NUM_THREADS")
               if k in os.environ]  # fmt: skip
    host, load = platform.node(), " / ".join(f"{x:.2f}" for x in os.getloadavg())
    line = (
        f"Machine: {host}: {cpu}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 1024**3:.1f} GiB RAM, {name}, kernel "
        f"{platform.release()}, Python {platform.python_version()}; load average at start "
        f"{load} (1/5/15 min); threads: {', '.join(threads) or 'defaults'}."
    )
    return {"host": host, "load": load.split(" / ")[0], "cores": str(os.cpu_count()), "line": line}


@dataclass(frozen=True)
class Row:
    section: str
    case: str
    seconds: Sequence[float] = ()  # every measurement; the table shows median, min, max
    peak_mib: float | None = None
    rows: int | None = None  # the rows the case handled: rows/s from the median
    note: str = ""

    def cells(self) -> list[str]:
        med = median(self.seconds)
        return [
            self.section,
            self.case,
            f"{med:.2f}" if self.seconds else "",
            f"{min(self.seconds):.2f} / {max(self.seconds):.2f}" if self.seconds else "",
            "" if self.peak_mib is None else f"{self.peak_mib:.0f}",
            f"{self.rows / med:,.0f}" if self.rows and self.seconds and med > 0 else "",
            self.note,
        ]


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured in this run
    why: str = ""

    def cells(self) -> list[str]:
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[self.met]
        return [self.name, self.measured, verdict + (f": {self.why}" if self.why else "")]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        section: str,
        case: str,
        seconds: Sequence[float] = (),
        peak_mib: float | None = None,
        rows: int | None = None,
        note: str = "",
    ) -> None:
        """A row of the table (:class:`Row`)."""
        self.rows.append(Row(section, case, seconds, peak_mib, rows, note))

    def target(self, name: str, measured: str, met: bool | None, why: str = "") -> None:
        """A target and whether it was met (:class:`Target`)."""
        self.targets.append(Target(name, measured, met, why))

    def steps(self, section: str, label: str, nights: list[dict[str, dict]]) -> dict[str, float]:
        """A row per step of the nights (records of bench_driver): its own time and its
        peak RSS (the highest); returns each step's median own time."""
        rows = flight_rows(nights[-1])
        own = {}
        for step in STEPS:
            records = [night[step] for night in nights if step in night]
            if records:
                seconds = [r["seconds"] for r in records]
                peak = max(r["peak_mib"] for r in records)
                self.add(section, f"{label}: {step}", seconds, peak, rows, "own time, one process")
                own[step] = median(seconds)
        return own

    def markdown(self) -> str:
        parts = [table(TARGET_COLUMNS, [t.cells() for t in self.targets]), ""]
        parts += [table(ROW_COLUMNS, [r.cells() for r in self.rows]), ""]
        return "\n".join(parts + [f"- {note}" for note in self.notes])


def flight_rows(records: dict[str, dict]) -> int | None:
    """The flights a night's ingest handed on (its result's ``flight_rows``)."""
    result = records.get("ingest", {}).get("result")
    return (
        int(result["flight_rows"]) if isinstance(result, dict) and "flight_rows" in result else None
    )


def table(header: Sequence[str], rows: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def insert_run(doc: str, text: str) -> str:
    """``doc`` with ``text`` as the newest subsection of the harness section (made, with
    its introduction, at the end the first time); older runs stay as they are, below."""
    if SECTION not in doc.splitlines():
        return doc.rstrip("\n") + f"\n\n{SECTION}\n{INTRO}\n{text.rstrip()}\n"
    lines = doc.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    first = next((i for i in range(start + 1, end) if lines[i].startswith("### ")), end)
    if not lines[first - 1].endswith("\n"):
        lines[first - 1] += "\n"
    block = ("\n" if lines[first - 1].strip() else "") + text.rstrip("\n") + "\n\n"
    return "".join(lines[:first]) + block + "".join(lines[first:])
