"""Wall time and peak memory of the six steps: in one Python process, and through
`airflow dags test`; plus the DAG file's import time. Results: docs/benchmarks-log.md,
"Run time and memory: the six steps with and without Airflow".

    .venv/bin/python benchmarks/pipeline_runtime.py [--day 2013-06-30] [--repeat 3]

Runs in a throw-away project root with the shipped include/params.yaml (the default
window) and a SQLite warehouse seeded with the real 2013 data (no replay), so the
numbers do not depend on today's date. Each measurement starts a fresh process, so
imports are paid each time, as they are in a scheduled run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]

IN_PROCESS = """
import sys, time, importlib
t = time.perf_counter()
for step in {steps!r}:
    importlib.import_module(f"flight_delays.{{step}}").run(day={day!r}, root={root!r})
print(f"elapsed={{time.perf_counter() - t:.3f}}")
"""

DAG_IMPORT = """
import runpy, time
t = time.perf_counter()
runpy.run_path({dag!r})
print(f"elapsed={{time.perf_counter() - t:.3f}}")
"""


# A fresh parent per measurement: RUSAGE_CHILDREN's ru_maxrss is the largest child that
# parent ever waited for (KiB on Linux), so it must not be shared between measurements.
PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process ``cmd`` started."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *cmd], env=env, check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    return wall, int(done.stdout.split()[-1]) / 1024


def fresh_outputs(root: Path) -> None:
    """Delete what a run of the day writes, keeping the raw partitions and the promoted
    models (models/registry/, which the warehouse's champion row points to): the state a
    nightly run starts from."""
    for sub in ("data/interim", "data/processed", "data/output", "reports"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for run_models in (root / "models").glob("ds=*"):
        shutil.rmtree(run_models, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2013-06-30", help="processed day (2013)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    day = date.fromisoformat(args.day)

    from flight_delays.intake.demo import seed
    from flight_delays.store.config import load_settings

    work = Path(tempfile.mkdtemp(prefix="fd-bench-"))
    root = work / "project"
    (root / "include").mkdir(parents=True)
    shutil.copy(REPO / "include" / "params.yaml", root / "include" / "params.yaml")
    url = f"sqlite:///{work / 'warehouse.sqlite'}"
    window = load_settings(root).ingest.window_days
    seed(url, [0], original_range=(day - timedelta(days=window + 1), day))

    env = {
        **os.environ,
        "FLIGHT_DELAYS_HOME": str(root),
        "FLIGHT_DELAYS_SOURCE_URL": url,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/New_York",
    }
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True)

    # Warm the raw partitions once: a nightly run finds its history on disk.
    script = IN_PROCESS.format(steps=["ingest"], day=args.day, root=str(root))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)

    run_date = (day + timedelta(days=1)).isoformat()
    rows = []
    cases = {
        "airflow dags test (6 tasks)": [
            str(BIN / "airflow"),
            "dags",
            "test",
            "flight_delays",
            run_date,
        ],
        "one Python process (6 steps)": [
            sys.executable,
            "-c",
            IN_PROCESS.format(steps=STEPS, day=args.day, root=str(root)),
        ],
        "DAG file import": [
            sys.executable,
            "-c",
            DAG_IMPORT.format(dag=str(REPO / "dags" / "flight_delays_pipeline.py")),
        ],
    }
    for name, cmd in cases.items():
        walls, peaks = [], []
        for _ in range(args.repeat):
            fresh_outputs(root)
            wall, peak = timed(cmd, env)
            walls.append(wall)
            peaks.append(peak)
        rows.append((name, statistics.median(walls), min(walls), max(walls), max(peaks)))

    print(f"processed day {args.day}, window {window} days, {args.repeat} runs each")
    print("| case | median wall (s) | min (s) | max (s) | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for name, med, low, high, peak in rows:
        print(f"| {name} | {med:.1f} | {low:.1f} | {high:.1f} | {peak:.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
