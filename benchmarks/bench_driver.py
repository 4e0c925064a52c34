"""What `make step` runs (``python -m flight_delays run <steps> --day D``: the same
``run()`` calls with ``cli.step_kwargs``, one run id), printing each step's own time and
peak RSS as a line ``BENCH_STEP {json}``. The steps are imported first, so a step's time
is its ``run()`` alone; its peak is the process's high-water mark, reset before the step
(/proc/self/clear_refs) once the memory earlier steps freed was handed back (as
``cli.run_steps`` does), so it holds what they still hold.

    .venv/bin/python benchmarks/bench_driver.py all --day 2013-06-30 [--root R] [--params P]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import json
import logging
import time
from datetime import date
from pathlib import Path

from flight_delays import cli
from flight_delays.base import memory
from flight_delays.store.config import new_run_id


def _reset_peak() -> None:
    # Not Linux, or not allowed: the mark then only grows.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", help="a step, a range first..last, or all")
    parser.add_argument("--day", required=True)
    parser.add_argument("--root")
    parser.add_argument("--params")
    args = parser.parse_args()
    steps = cli.select_steps(args.steps)
    day = date.fromisoformat(args.day)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    atexit.register(gc.freeze)  # as `python -m flight_delays` does (docs/benchmarks.md)
    modules = {step: importlib.import_module(f"flight_delays.{step}") for step in steps}
    run_id = new_run_id(day)
    for step in steps:
        kwargs = cli.step_kwargs(step, day, args.root, args.params, run_id=run_id)
        memory.release_freed()  # between steps, as cli.run_steps does
        _reset_peak()
        started = time.perf_counter()
        result = modules[step].run(**kwargs)
        seconds = time.perf_counter() - started
        record = {"step": step, "seconds": seconds, "peak_mib": _peak_mib(), "result": result}
        print("BENCH_STEP " + json.dumps(record, default=str), flush=True)


if __name__ == "__main__":
    main()
