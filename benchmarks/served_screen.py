"""Record, once per setting and alignment, what the day-by-day served simulation needs:
the absolute error of every run's model on every later holdout day, and the baseline's.

    FLIGHT_DELAYS_THREADS=2 .venv/bin/python benchmarks/served_screen.py --name b2_1231
    FLIGHT_DELAYS_THREADS=2 .venv/bin/python benchmarks/served_screen.py --name b2_1228 \\
        --last-end 2013-12-28
    FLIGHT_DELAYS_THREADS=2 .venv/bin/python benchmarks/served_screen.py --name b4_1231 \\
        --set train.bagging_models=4 --set train.bagging_day_fraction=0.7

The holdouts are those of ``python -m flight_delays.backtest --every 7`` (frames built
and cached by ``quality_screen.Frames``, the backtest's own steps). Each run's model is
fitted with :func:`flight_delays.train.fit_model` and scored on its own holdout and on
every later one, per flight day: ``[sum of |error|, flights]``. From these records
:func:`flight_delays.backtest.simulate_served` can replay the champion and any served
step-down rule without a refit (benchmarks/served_rules.py). Results: ``--out``
(default reports/screen/, not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_screen import REPO, Frames, apply_overrides

from flight_delays import backtest
from flight_delays import train as train_mod
from flight_delays.base import schema
from flight_delays.intake import demo
from flight_delays.store.config import load_settings


def daily_errors(holdout: pd.DataFrame, predicted: np.ndarray) -> list[list[float]]:
    """Per holdout day, oldest first: [sum of absolute errors (minutes), flights]."""
    error = np.abs(holdout[schema.TARGET].to_numpy(dtype=float) - np.asarray(predicted, float))
    days = pd.to_datetime(holdout[schema.DAY]).dt.date
    frame = pd.DataFrame({"day": days.to_numpy(), "error": error})
    grouped = frame.groupby("day")["error"].agg(["sum", "count"]).sort_index()
    return [[float(s), int(n)] for s, n in zip(grouped["sum"], grouped["count"], strict=True)]


def holdout_days(holdout: pd.DataFrame) -> list[str]:
    return sorted({d.isoformat() for d in pd.to_datetime(holdout[schema.DAY]).dt.date})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--every", type=int, default=7)
    parser.add_argument("--last-end", type=date.fromisoformat)
    parser.add_argument(
        "--horizon",
        type=int,
        default=8,
        help="score each model on at most this many later holdouts",
    )
    parser.add_argument("--params", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fd-quality-screen"))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "screen")
    args = parser.parse_args(argv)
    settings = apply_overrides(load_settings(REPO, args.params), args.set)
    ends = backtest.holdout_ends(
        demo.FIRST_DAY,
        demo.LAST_DAY,
        args.every,
        settings.ingest.window_days,
        last_end=args.last_end,
    )
    frames = Frames(settings, args.cache)
    started = time.perf_counter()
    holdouts, days, baseline, challenger_mae = [], [], [], []
    for day in ends:
        _train, holdout, base = frames.get(day)
        holdouts.append(holdout)
        days.append(holdout_days(holdout))
        baseline.append(daily_errors(holdout, base))
    print(f"frames ready in {time.perf_counter() - started:.0f} s", flush=True)
    models, fit_wall = [], []
    for i, day in enumerate(ends):
        train_frame, _, _ = frames.get(day)
        wall = time.perf_counter()
        model = train_mod.fit_model(train_frame, settings.train)
        fit_wall.append(time.perf_counter() - wall)
        later = holdouts[i : i + 1 + args.horizon]
        models.append([daily_errors(h, train_mod.predict(model, h)) for h in later])
        own = np.array(models[i][0])
        base = np.array(baseline[i])
        challenger_mae.append(own[:, 0].sum() / own[:, 1].sum())
        print(
            f"{day}: challenger {challenger_mae[-1]:.2f}, baseline "
            f"{base[:, 0].sum() / base[:, 1].sum():.2f} min, fit {fit_wall[-1]:.1f} s, "
            f"elapsed {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        del model
    result = {
        "name": args.name,
        "overrides": list(args.set),
        "train": settings.train.hyperparameters() | settings.train.bagging(),
        "threads": train_mod.thread_limit(),
        "ends": [d.isoformat() for d in ends],
        "days": days,
        "baseline": baseline,
        "models": models,
        "fit_wall_s": fit_wall,
        "total_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"served_{args.name}.json"
    path.write_text(json.dumps(result) + "\n")
    print(f"saved {path} in {result['total_s']:.0f} s")


if __name__ == "__main__":
    main()
