"""How the benchmark harness measures (benchmarks/harness.py): one command in a fresh
process (wall time, peak resident memory of its whole process tree, the largest single
process), cases run in turn, medians, and the machine the figures come from.

Peak RSS of the tree: psutil sums the RSS of the process and every descendant every
50 ms, so a task that Airflow forks counts with its parent (pages shared after a fork are
counted twice, as `ps` would). The largest single process comes from the kernel
(``wait4``'s ``ru_maxrss``: exact, not sampled).
"""

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
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05
MIB = 1024 * 1024


class CommandFailed(RuntimeError):
    """A measured command exited non-zero (or ran out of time): its tail is in the message."""


@dataclass(frozen=True)
class Run:
    """One measured process."""

    wall: float  # seconds, start to exit
    peak_mib: float  # peak of the summed RSS of the process tree (sampled)
    # The largest single process of the tree (the kernel's high-water mark). A floor, not
    # a measure, for a small command: the child counts the pages of this (parent)
    # process it was forked from until it execs (seen: 1,128 MiB for every step after
    # the harness had seeded a large warehouse); bench_driver reports a step's own mark.
    largest_mib: float
    output: str  # stdout and stderr, interleaved
    cpu: float = 0.0  # seconds of user and system time, with the descendants it waited for


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in ``process`` and all its descendants (those that exit between the
    listing and the reading count as 0)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def run(
    cmd: Sequence[str], env: Mapping[str, str], timeout: float = 3600, cwd: str | None = None
) -> Run:
    """Run ``cmd`` to its end in a session of its own and measure it. Raises
    CommandFailed when it exits non-zero or outlives ``timeout`` (then its whole process
    group is killed)."""
    with tempfile.TemporaryFile(mode="w+", errors="replace") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not done.is_set():
                peak = max(peak, tree_rss(root))
                done.wait(SAMPLE_SECONDS)

        def kill() -> None:
            if not done.is_set():
                os.killpg(proc.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        # wait4, not Popen.wait: it also returns the kernel's accounting of the process.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        timer.cancel()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Whatever the command left running in its session (it should leave nothing).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)[:300]} exited {proc.returncode} after {wall:.0f} s "
            f"(timeout {timeout:.0f} s):\n{output[-4000:]}"
        )
    # ru_maxrss is in KiB on Linux.
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, peak / MIB, usage.ru_maxrss / 1024, output, cpu)


def in_turn(
    cases: Mapping[str, Callable[[], Run]],
    repeat: int,
    prepare: Callable[[str], None] | None = None,
) -> dict[str, list[Run]]:
    """Each case ``repeat`` times, the cases in turn (A B A B ...), so a drift of the
    shared machine hits them alike; ``prepare(name)`` runs before each measurement."""
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, case in cases.items():
            if prepare is not None:
                prepare(name)
            runs[name].append(case())
    return runs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return median(values), min(values), max(values)


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the pair-by-pair differences a - b (runs taken in turn)."""
    return spread([x - y for x, y in zip(a, b, strict=True)])


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
        pretty = next(line for line in text.splitlines() if line.startswith("PRETTY_NAME="))
        name = pretty.split("=", 1)[1].strip('"')
    except (OSError, StopIteration):
        name = platform.system()
    return f"{name}, kernel {platform.release()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """The machine the figures come from, with the load average at the start."""
    load = os.getloadavg()
    threads = {
        k: os.environ[k] for k in ("FLIGHT_DELAYS_THREADS", "OMP_NUM_THREADS") if k in os.environ
    }
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "os": _os_name(),
        "python": platform.python_version(),
        "load": f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
        "threads": ", ".join(f"{k}={v}" for k, v in threads.items()) or "defaults",
    }
