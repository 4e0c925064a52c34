"""What freezing the forkserver's heap saves a task: the steps of one day run in a process
forked from a forkserver that preloaded the stack's list (deploy/executor-local.env), as a
LocalExecutor task is, with the list as shipped (ending in flight_delays.base.frozen_heap)
and without its last module, in turn (the order alternates pair by pair). Prints each
step's median time, and the count and time of the full collections of the six steps
together, per variant.

    .venv/bin/python benchmarks/bench_frozen_heap.py --day 2013-06-30 [--pairs 4] [--root R]

The steps write what `make step` writes (a run folder, a registry row): use a root you
can throw away, or the project's after `make run`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.queues
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "stack"))

from flight_stack import preload, settings  # noqa: E402  (deploy/stack, put on the path)

FREEZE = "flight_delays.base.frozen_heap"
STEPS = ("ingest", "featurize", "split", "train", "score", "chart")


def shipped_preload() -> list[str]:
    """The scheduler's forkserver preload list, resolved from the files the stack reads
    (deploy/airflow.env, then deploy/executor-local.env) as Airflow resolves it."""
    env: dict[str, str] = {}
    for shipped in (settings.SHARED_ENV, settings.Config.from_env().executor_env):
        env.update(settings.parse_env(shipped.read_text(), str(shipped)))
    for modules, components in preload.preload_lists(env).items():
        if "scheduler" in components:
            return list(modules)
    raise SystemExit("the shipped settings give the scheduler no forkserver preload list")


def _steps(day: str, root: str | None, results: multiprocessing.queues.Queue) -> None:
    """In the forked process: each step's time, and the full collections'."""
    import gc
    import importlib
    from datetime import date

    from flight_delays import cli
    from flight_delays.store.config import new_run_id

    full = {"count": 0, "seconds": 0.0}
    started = [0.0]

    def watch(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            full["count"] += 1
            full["seconds"] += time.perf_counter() - started[0]

    gc.callbacks.append(watch)
    processed = date.fromisoformat(day)
    run_id = new_run_id(processed)
    record: dict = {"frozen": gc.get_freeze_count()}
    for step in STEPS:
        began = time.perf_counter()
        module = importlib.import_module(f"flight_delays.{step}")  # as a task imports it
        module.run(**cli.step_kwargs(step, processed, root, None, run_id=run_id))
        record[step] = time.perf_counter() - began
    results.put({**record, "full_gcs": full["count"], "full_gc_seconds": full["seconds"]})


def one(day: str, root: str | None, frozen: bool) -> dict:
    """Run in a process of its own: a forkserver is one per process."""
    variant = "frozen" if frozen else "plain"
    command = [sys.executable, __file__, "--day", day, "--one", variant]
    if root:
        command += ["--root", root]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the {variant} run took over 600 s") from None
    if done.returncode != 0:
        raise SystemExit(f"the {variant} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", required=True)
    parser.add_argument("--root")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--one", choices=("frozen", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        modules = shipped_preload()
        if args.one == "plain":
            modules = [name for name in modules if name != FREEZE]
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(modules)
        results = context.Queue()
        worker = context.Process(target=_steps, args=(args.day, args.root, results))
        worker.start()
        while True:  # a step that raises ends the child without a record
            try:
                record = results.get(timeout=5)
                break
            except queue.Empty:
                if not worker.is_alive():
                    exitcode = worker.exitcode
                    raise SystemExit(f"the steps' process ended with exit {exitcode}") from None
        worker.join()
        print(json.dumps(record))
        return
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for pair in range(args.pairs):  # in turn, so a drift of the machine's speed hits both
        for frozen in (True, False) if pair % 2 == 0 else (False, True):
            runs[frozen].append(one(args.day, args.root, frozen))
    print(f"{args.pairs} pairs in turn, day {args.day}; medians (s)")
    print("| | " + " | ".join(STEPS) + " | full collections | their time | frozen objects |")
    print("|---" * (len(STEPS) + 4) + "|")
    for frozen, label in ((False, "without frozen_heap"), (True, "shipped (frozen_heap last)")):
        rows = runs[frozen]
        cells = [f"{statistics.median(r[step] for r in rows):.2f}" for step in STEPS]
        gcs = statistics.median(r["full_gcs"] for r in rows)
        seconds = statistics.median(r["full_gc_seconds"] for r in rows)
        frozen_objects = statistics.median(r["frozen"] for r in rows)
        tail = f"{gcs:g} | {seconds:.3f} | {frozen_objects:,.0f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {tail} |")


if __name__ == "__main__":
    main()
