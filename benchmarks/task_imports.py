"""What a task process of the live stack pays before its step runs: importing the step's
module (pandas, pyarrow, scikit-learn, skops, matplotlib) in a process forked from a
LocalExecutor worker, against a worker forked from a forkserver that preloaded the steps'
libraries (``[core] mp_start_method = forkserver`` with ``[core] mp_forkserver_preload``).

For each parent (one fresh interpreter each, in turn, ``--repeat`` times), the parent
imports what it would hold, then forks one child per step; each child times ``from
flight_delays import <step>`` and reports it. The step's own work is not run: this is
the part of "task duration minus the step's own time" that the step's imports make.

    .venv/bin/python benchmarks/task_imports.py [--repeat 3]

docs/benchmarks.md ("Airflow's overhead: where the time goes").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

STEPS = ("ingest", "featurize", "split", "train", "score", "chart")
#: What a LocalExecutor worker holds when forked from the scheduler: Airflow, the
#: executor, the Task SDK's supervisor and task runner, the operator.
WORKER = (
    "airflow.executors.local_executor",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.operators.python",
)
#: The shipped preload: the steps' libraries first, then what the worker holds.
ENV_FILE = Path(__file__).resolve().parents[1] / "deploy" / "executor-local.env"


def shipped_preload() -> tuple[str, ...]:
    """``[core] mp_forkserver_preload`` as deploy/executor-local.env sets it."""
    for line in ENV_FILE.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD":
            return tuple(name.strip() for name in value.split(",") if name.strip())
    raise SystemExit(f"{ENV_FILE} sets no AIRFLOW__CORE__MP_FORKSERVER_PRELOAD")


PARENT = """
import importlib, json, os, sys, time, warnings
warnings.simplefilter("ignore")
for name in sys.argv[1].split(","):
    importlib.import_module(name)
out = {}
for step in sys.argv[2].split(","):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t = time.perf_counter()
        importlib.import_module("flight_delays." + step)
        os.write(w, repr(time.perf_counter() - t).encode())
        os._exit(0)
    os.close(w)
    out[step] = float(os.read(r, 100).decode())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def measure(preload: tuple[str, ...]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", PARENT, ",".join(preload), ",".join(STEPS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    cases = {
        "worker forked from the scheduler (fork)": WORKER,
        "forkserver, preloaded": shipped_preload(),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, preload in cases.items():  # in turn: a drift of the machine hits both
            runs[name].append(measure(preload))
    print("| step | " + " | ".join(cases) + " |")
    print("|---|" + "---|" * len(cases))
    for step in (*STEPS, "mean"):
        cells = []
        for name in cases:
            values = [
                statistics.mean(r.values()) if step == "mean" else r[step] for r in runs[name]
            ]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"| {step} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
