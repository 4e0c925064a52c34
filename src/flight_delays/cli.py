"""The steps without Airflow: ``python -m flight_delays run <step|first..last> --day D``.

The developer loop's fast path. It calls the same step runner the DAG's tasks call
(``flight_delays.<step>.run``: :mod:`flight_delays.store.step_runner`), with the same
settings (include/params.yaml under the project root, read by
:func:`flight_delays.store.config.load_settings`) and the same artifact
checks (a missing upstream file raises :class:`flight_delays.store.io.MissingArtifactError`),
in one process, so pandas and scikit-learn are imported once for a range of steps.
The process exits non-zero, with the error's message, when a step fails; the steps
after it do not run.

Only the step modules a run needs are imported, and only once the arguments are valid,
so ``--help`` and argument errors return at once.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from flight_delays.base import memory
from flight_delays.base.dates import parse_day
from flight_delays.base.errors import PipelineDataError
from flight_delays.store.config import new_run_id
from flight_delays.store.io import MissingArtifactError

logger = logging.getLogger(__name__)

#: The pipeline's steps in the order the DAG runs them (a DAG test keeps the two equal).
STEPS: tuple[str, ...] = ("ingest", "featurize", "split", "train", "score", "chart")
RANGE_SEPARATOR = ".."
#: The score step records this in the registry's run_id column, as the DAG records
#: Airflow's run id: a row made by hand is told apart from a scheduled one.


class StepSelectionError(ValueError):
    """A step name or range that does not name steps of the pipeline, in order."""


class StepFailed(RuntimeError):
    """A step raised: carries the step's name and the original exception."""

    def __init__(self, step: str, error: BaseException) -> None:
        self.step = step
        self.error = error
        super().__init__(f"step '{step}' failed: {type(error).__name__}: {error}")


def select_steps(spec: str, steps: Sequence[str] = STEPS) -> list[str]:
    """The names ``spec`` selects from ``steps`` (in run order): one step (``train``), an
    inclusive range (``ingest..score``; an open end means the first or last step), or
    ``all``. The Airflow dev runner (dev/run_tasks.py) passes the DAG's task order."""
    spec = spec.strip()
    if spec == "all":
        return list(steps)
    if RANGE_SEPARATOR in spec:
        first, _, last = spec.partition(RANGE_SEPARATOR)
        first, last = first.strip() or steps[0], last.strip() or steps[-1]
    else:
        first = last = spec
    for name in (first, last):
        if name not in steps:
            raise StepSelectionError(
                f"unknown step {name!r}: the steps are {', '.join(steps)} "
                f"(one step, a range such as {steps[0]}..{steps[-1]}, or all)"
            )
    start, stop = steps.index(first), steps.index(last)
    if start > stop:
        raise StepSelectionError(
            f"range {spec!r} runs backwards: {first!r} comes after {last!r} in the pipeline"
        )
    return list(steps[start : stop + 1])


def step_kwargs(
    step: str,
    day: date,
    root: str | Path | None,
    params_file: str | Path | None,
    refetch: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The arguments of ``flight_delays.<step>.run``: the DAG's, minus what Airflow owns.
    ``run_id`` names this invocation, as Airflow's run id names a DAG run: train writes
    into its folder and score records one registry row for it.

    The warehouse URL is left out, so the package's default applies (params file, then
    FLIGHT_DELAYS_SOURCE_URL, then the embedded SQLite file), as under Airflow when the
    connection ``flight_delays_warehouse`` does not exist.
    """
    kwargs: dict[str, Any] = {"day": day.isoformat(), "root": root, "params_file": params_file}
    if step in ("train", "score"):
        kwargs["run_id"] = run_id or new_run_id(day)
    if step == "ingest" and refetch:
        kwargs["refetch"] = True  # the DAG's `refetch` parameter
    return kwargs


def run_steps(
    steps: Sequence[str],
    day: date,
    root: str | Path | None = None,
    params_file: str | Path | None = None,
    refetch: bool = False,
) -> dict[str, Any]:
    """Run ``steps`` in order for ``day``; return each step's result by name.
    ``refetch``: ingest reads the processed day from the warehouse again.

    Raises :class:`StepFailed` (from the step's own exception) at the first step that
    fails; the later steps do not run.
    """
    results: dict[str, Any] = {}
    run_id = new_run_id(day)  # one run: train and score share it
    for step in steps:
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"flight_delays.{step}")
            results[step] = module.run(**step_kwargs(step, day, root, params_file, refetch, run_id))
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        logger.info(
            "step %s done in %.1f s: %s", step, time.perf_counter() - started, results[step]
        )
        memory.release_freed()
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flight_delays",
        description="Run pipeline steps in this process, without Airflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser(
        "run",
        help="run one step or a range of steps for a processed day",
        description="Run one step, a range of steps (first..last, in pipeline order) or "
        f"all of them for a processed day. Steps: {', '.join(STEPS)}.",
    )
    run_cmd.add_argument("steps", help="a step (train), a range (ingest..score) or all")
    run_cmd.add_argument(
        "--day",
        required=True,
        help="the processed flight day, YYYY-MM-DD (the DAG run dated the next day processes it)",
    )
    run_cmd.add_argument("--root", help="project root (default: $FLIGHT_DELAYS_HOME or cwd)")
    run_cmd.add_argument("--params", help="parameter file (default: <root>/include/params.yaml)")
    run_cmd.add_argument(
        "--refetch",
        action="store_true",
        help="ingest: read the processed day from the warehouse again (the DAG's refetch)",
    )
    return parser


def _freeze_at_exit() -> None:
    """Move every live object to the permanent generation before the interpreter exits,
    so its final collection does not walk pandas', scikit-learn's and the frames' objects
    (measured in docs/benchmarks.md, "The developer loop")."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        steps = select_steps(args.steps)
        day = parse_day(args.day)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Registered first, so it runs last, after the handlers the steps' libraries add.
    atexit.register(_freeze_at_exit)
    started = time.perf_counter()
    try:
        run_steps(steps, day, root=args.root, params_file=args.params, refetch=args.refetch)
    except StepFailed as failed:
        if isinstance(failed.error, (PipelineDataError, MissingArtifactError)):
            # The message names the problem and the fix; a traceback would bury it.
            logger.error("%s", failed)
        else:
            logger.error("%s", failed, exc_info=failed.error)
        return 1
    logger.info(
        "%d step(s) for %s done in %.1f s: %s",
        len(steps),
        day.isoformat(),
        time.perf_counter() - started,
        ", ".join(steps),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
