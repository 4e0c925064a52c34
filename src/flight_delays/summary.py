"""Print where a run's results are: `python -m flight_delays.summary [--day D]`.

Used by `make run` after the DAG ran; without --day it reports the latest processed day
that has metrics.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from flight_delays.base.dates import parse_day
from flight_delays.store import artifacts, io
from flight_delays.store.config import ProjectPaths, project_paths


def latest_day(paths: ProjectPaths) -> date | None:
    """The most recent processed day with a ``metrics`` artifact, or None."""
    return max(artifacts.METRICS.days(paths.root), default=None)


def describe(paths: ProjectPaths, day: date) -> str:
    """A few lines naming the artifacts of ``day`` and the model's and baseline's MAE.
    The model is the one of the run that wrote the ``metrics`` artifact (its
    ``challenger``: each run trains into a folder of its own)."""
    metrics_path = artifacts.METRICS.path(paths.root, day)
    metrics = io.read_json(metrics_path, artifacts.METRICS)
    figures = sorted(
        path
        for entry in artifacts.FIGURE_ENTRIES.values()
        if (path := entry.path(paths.root, day)).is_file()
    )
    challenger = metrics.get("challenger", {})
    lines = [
        f"Processed day {day.isoformat()}",
        f"  metrics:     {metrics_path}",
        f"  predictions: {artifacts.PREDICTIONS.path(paths.root, day)}",
        f"  model:       {challenger.get('model', '?')} (run {challenger.get('run_id', '?')})",
        f"  model card:  {artifacts.DAY_MODEL_CARD.path(paths.root, day)}",
        f"  report:      {artifacts.REPORT.path(paths.root, day)}",
        "  charts:",
        *(f"    {figure}" for figure in figures),
        f"  holdout MAE: model {metrics['model']['mae']:.2f} min, "
        f"baseline {metrics['baseline']['mae']:.2f} min",
    ]
    if "decision" in metrics:
        lines.append(
            f"  champion ({metrics['champion_info']['name']}): "
            f"{metrics['champion']['mae']:.2f} min; "
            f"{'promoted' if metrics['decision']['promoted'] else 'kept'}: "
            f"{metrics['decision']['reason']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", help="processed day, YYYY-MM-DD (default: the latest)")
    parser.add_argument("--root", help="project root (default: $FLIGHT_DELAYS_HOME or cwd)")
    args = parser.parse_args(argv)
    paths = project_paths(args.root)  # the artifact root: $FLIGHT_DELAYS_STORAGE_URL, else it
    day = parse_day(args.day) if args.day else latest_day(paths)
    if day is None or not artifacts.METRICS.path(paths.root, day).is_file():
        print(f"no {artifacts.METRICS.filename} under {paths.root}", file=sys.stderr)
        return 1
    print(describe(paths, day))
    return 0


if __name__ == "__main__":
    sys.exit(main())
