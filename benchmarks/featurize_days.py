"""Featurize with per-day feature partitions against featurizing the whole window, for a
364-day and a 30-day window, side by side in one run (issue 11: "featurize work per run
independent of the window").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/featurize_days.py [--repeat 3]
        [--day 2013-12-30] [--keep]

Cases, each the median wall time of ``--repeat`` calls in this process, for the same
processed day and window:

- ``whole window``: the computation before day partitions (read every raw partition,
  data contract, build_features over the window, write the run's table): what every
  run paid;
- ``cold``: ``featurize.run`` with no day partition (the first run: it computes and
  writes every day);
- ``nightly``: every day partition present but the processed day's (the nightly run);
- ``rerun``: every day partition present.

A SQLite warehouse with the real 2013 days is seeded in a throw-away folder (removed at
the end unless ``--keep``); ingest fetches the 364 days once. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from bench_project import seed_2013

from flight_delays import featurize, ingest
from flight_delays.base.dates import window
from flight_delays.model import day_features, flight_features
from flight_delays.store import artifacts, io
from flight_delays.store.config import PARAMS_RELATIVE, load_settings

WINDOWS = (364, 30)


def whole_window(root: Path, day: date, params: Path) -> None:
    """The pre-partition featurize: every raw day read and featurized at once."""
    days = window(day, load_settings(root, params).ingest.window_days)
    flights, weather = (
        pd.concat([io.read_parquet(e.path(root, d), e) for d in days], ignore_index=True)
        for e in day_features.RAW_FILES
    )
    features, _counts = flight_features.featurize_rows(flights, weather)
    features = flight_features._validate(flight_features.FEATURES_SCHEMA, features, "features")
    io.write_parquet(features, artifacts.FEATURES.path(root, day))


def drop_partitions(root: Path, days: list[date]) -> None:
    for d in days:
        shutil.rmtree(artifacts.DAY_FEATURES_DIR.path(root, d), ignore_errors=True)


def timed(work: Callable[[], object], prepare: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        prepare()
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2013, 12, 30))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="featurize-days-"))
    root = work / "project"
    (root / "include").mkdir(parents=True)
    url = f"sqlite:///{work / 'warehouse.sqlite'}"
    first = args.day - timedelta(days=max(WINDOWS) - 1)
    seed_2013(url, first, args.day)
    params = {}
    for size in WINDOWS:
        params[size] = root / f"params_{size}.yaml"
        params[size].write_text(f"ingest: {{window_days: {size}}}\n")
    shutil.copy(params[max(WINDOWS)], root / PARAMS_RELATIVE)
    started = time.perf_counter()
    ingest.run(args.day, root=root, params_file=params[max(WINDOWS)], source_url=url)
    print(f"ingest of {max(WINDOWS)} days: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    load_at_start = os.getloadavg()
    rows = []
    for size in WINDOWS:
        days = window(args.day, size)
        # the manifest of this window (the partitions are there: nothing is fetched)
        ingest.run(args.day, root=root, params_file=params[size], source_url=url)

        def run(size: int = size) -> None:
            featurize.run(args.day, root=root, params_file=params[size])

        run()  # warm-up: imports, the code fingerprint, the file cache

        def before(size: int = size) -> None:
            whole_window(root, args.day, params[size])

        old = timed(before, lambda: None, args.repeat)
        cold = timed(run, lambda days=days: drop_partitions(root, days), args.repeat)
        nightly = timed(run, lambda: drop_partitions(root, [args.day]), args.repeat)
        rerun = timed(run, lambda: None, args.repeat)
        flights = featurize.run(args.day, root=root, params_file=params[size])["rows"]
        rows.append((size, flights, old, cold, nightly, rerun))

    load = os.getloadavg()[0]
    print(
        f"\n{platform.node() or 'machine'}: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, processed day {args.day}, median of {args.repeat}, "
        f"load average at the start of the timings {load_at_start[0]:.1f} / "
        f"{load_at_start[1]:.1f} (1/5 min), 1-minute load at the end {load:.1f}\n"
    )
    print(
        "| window | feature rows | whole window (before) | cold: every day computed | "
        "nightly: 1 day computed | rerun: 0 computed | nightly vs before |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, flights, old, cold, nightly, rerun in rows:
        print(
            f"| {size} days | {flights:,} | {old:.2f} s | {cold:.2f} s | {nightly:.2f} s | "
            f"{rerun:.2f} s | {old / nightly:.1f}x faster |"
        )
    (big, *_, big_night, _), (small, *_, small_night, _) = rows
    print(
        f"\nnightly {big}-day / {small}-day window: {big_night / small_night:.2f}x "
        f"(the window is {big / small:.1f}x longer)"
    )
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
