"""Orchestration overhead on the live stack under variants of the stack's settings: for
each variant a private stack (bench_stack.live_stack, its settings file holding the
variant's KEY=value lines, read after deploy/*.env), REST-triggered runs of one day
against the same steps in one process (bench_stack.live_run: task duration minus the
step's own time, plus the gaps between tasks), and the stack's idle memory. Variants run
one after the other, each on a stack of its own; results print as one table.

    .venv/bin/python benchmarks/stack_overhead.py [--repeat 2] [--day 2013-06-30]
        [--variant 'name=KEY=value;KEY=value' ...]

Without ``--variant``: "as shipped" (deploy/*.env unchanged) and the Airflow defaults the
shipped settings replace (``SHIPPED_CHANGES`` put back), so a change is measured against
what it replaced. docs/benchmarks.md ("Airflow's overhead: where the time goes").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_stack
from bench_project import Project
from bench_results import Results

#: What the shipped deploy/*.env changed against Airflow's defaults, for the overhead:
#: the "before" variant puts these back.
SHIPPED_CHANGES = {
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    "AIRFLOW__CORE__MP_START_METHOD": "",  # unset: the platform's default, fork
    "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": "",
}
WINDOW = 90


def parse_variant(text: str) -> tuple[str, str]:
    """``name=KEY=value;KEY=value`` -> (name, settings lines)."""
    name, _, pairs = text.partition("=")
    lines = [p.strip() for p in pairs.split(";") if p.strip()]
    if not name or any("=" not in line for line in lines):
        raise argparse.ArgumentTypeError(f"expected name=KEY=value;KEY=value, got {text!r}")
    return name, "".join(f"{line}\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2013, 6, 30))
    parser.add_argument("--variant", type=parse_variant, action="append")
    args = parser.parse_args(argv)
    before = "".join(f"{k}={v}\n" for k, v in SHIPPED_CHANGES.items())
    variants = args.variant or [("Airflow defaults (before)", before), ("as shipped", "")]
    project = Project(Path(tempfile.mkdtemp(prefix="fd-stack-overhead-")), quick=False)
    seeded = (args.day - timedelta(days=WINDOW + 7), args.day + timedelta(days=1))
    project.seed(*seeded)
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    for name, lines in variants:
        results = Results()
        with bench_stack.live_stack(project, WINDOW, seeded, settings_lines=lines) as stack:
            bench_stack.idle(stack, results)
            bench_stack.live_run(stack, project, args.day, args.repeat, results)
        print(f"\n== {name}: {lines.strip() or '(deploy/*.env as they are)'}")
        print("load average now: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        for row in results.rows:
            print("  | " + " | ".join(row.cells()) + " |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
