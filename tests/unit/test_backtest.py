"""flight_delays.backtest: the replayed runs use the pipeline's own steps, the champion is
carried forward by the promotion rule, the table and summary are right by hand, and the
command writes its files."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from flight_delays import backtest, split, train
from flight_delays.backtest import HoldoutResult
from flight_delays.base import schema
from flight_delays.model import fitted, flight_features, promotion
from flight_delays.model.scoring import OriginHourMedianBaseline
from flight_delays.store.config import (
    IngestSettings,
    ProjectPaths,
    ScoreSettings,
    Settings,
    SplitSettings,
    TrainSettings,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIRST = date(2024, 3, 1)


def raw_frames(days: int = 12, per_day: int = 60, seed: int = 0):
    """Raw flights and hourly weather (schema.FLIGHT_COLUMNS / WEATHER_COLUMNS) for
    ``days`` days from FIRST: delays depend on the hour and the rain."""
    rng = np.random.default_rng(seed)
    flights, weather = [], []
    for d in range(days):
        day = pd.Timestamp(FIRST + timedelta(days=d))
        rain = rng.exponential(0.05, (3, 24))
        for o, origin in enumerate(("EWR", "JFK", "LGA")):
            for hour in range(24):
                weather.append(
                    {
                        schema.DAY: day,
                        schema.ORIGINAL_DAY: day,
                        schema.REPLAY_CYCLE: 0,
                        "origin": origin,
                        "hour": hour,
                        **dict.fromkeys(schema.WEATHER_MEASURES, 10.0),
                        "precip": rain[o, hour],
                    }
                )
        for k in range(per_day):
            hour = int(rng.integers(6, 22))
            origin = ("EWR", "JFK", "LGA")[k % 3]
            delay = 2.0 * (hour - 12) + 200.0 * rain[k % 3, hour] + rng.normal(0, 8)
            flights.append(
                {
                    schema.DAY: day,
                    schema.ORIGINAL_DAY: day,
                    schema.REPLAY_CYCLE: 0,
                    "carrier": ("AA", "B6", "UA")[k % 3 - 1],
                    "flight": k,
                    "tailnum": "N1",
                    "origin": origin,
                    "dest": ("BOS", "ORD")[k % 2],
                    "sched_dep_time": hour * 100,
                    "sched_arr_time": hour * 100 + 130,
                    "dep_time": np.nan,
                    "dep_delay": np.nan,
                    "arr_time": np.nan,
                    "arr_delay": round(delay),
                    "air_time": np.nan,
                    "distance": 500.0,
                }
            )
    return (
        pd.DataFrame(flights, columns=schema.FLIGHT_COLUMNS),
        pd.DataFrame(weather, columns=schema.WEATHER_COLUMNS),
    )


def small_settings(tmp_path, window_days: int = 8, holdout_days: int = 2) -> Settings:
    return Settings(
        paths=ProjectPaths(tmp_path),
        ingest=IngestSettings(window_days=window_days),
        split=SplitSettings(holdout_days=holdout_days, recent_days=2, history_days=4),
        train=TrainSettings(max_iter=20, min_samples_leaf=10, max_leaf_nodes=7),
        score=ScoreSettings(within_minutes=15.0, promotion_margin=0.01, served_min_flights=1),
    )


def result(
    end: date,
    challenger: float,
    baseline: float,
    champion: float | None = None,
    decision: str = "kept",
) -> HoldoutResult:
    return HoldoutResult(
        holdout_end=end,
        holdout_start=end - timedelta(days=6),
        train_start=end - timedelta(days=89),
        train_rows=1000,
        holdout_rows=100,
        challenger_mae=challenger,
        champion_mae=baseline if champion is None else champion,
        baseline_mae=baseline,
        champion="baseline" if champion is None else "model of 2013-03-26",
        decision=decision,
        reason="by hand",
        seconds=1.0,
    )


def test_holdout_ends_cover_2013_every_28_and_every_7_days():
    first, last = date(2013, 1, 1), date(2013, 12, 31)
    every_28 = backtest.holdout_ends(first, last, every=28, window_days=90)
    assert len(every_28) == 10
    assert (every_28[0], every_28[-1]) == (date(2013, 4, 23), last)
    assert {(b - a).days for a, b in itertools.pairwise(every_28)} == {28}
    weekly = backtest.holdout_ends(first, last, every=7, window_days=90)
    assert len(weekly) == 40 and weekly[0] == date(2013, 4, 2)
    # the first end is the first day whose whole window lies in the data
    assert backtest.holdout_ends(first, last, 1, 90)[0] == date(2013, 3, 31)
    limited = backtest.holdout_ends(
        first, last, 7, 90, first_end=date(2013, 7, 1), last_end=date(2013, 7, 31)
    )
    assert limited == [
        date(2013, 7, 3),
        date(2013, 7, 10),
        date(2013, 7, 17),
        date(2013, 7, 24),
        date(2013, 7, 31),
    ]
    with pytest.raises(ValueError, match="every must be >= 1"):
        backtest.holdout_ends(first, last, 0, 90)


def test_replay_run_runs_the_pipeline_steps_on_the_window(tmp_path):
    flights, weather = raw_frames()
    before = flights.copy()
    settings = small_settings(tmp_path)
    day = FIRST + timedelta(days=10)  # window: days 3..10, holdout days 9..10

    got, model = backtest.replay_run(flights, weather, day, settings)

    pd.testing.assert_frame_equal(flights, before)
    assert (got.holdout_end, got.holdout_start) == (day, day - timedelta(days=1))
    assert got.train_start == FIRST + timedelta(days=3)
    assert (got.train_rows, got.holdout_rows) == (6 * 60, 2 * 60)
    # The baseline's MAE, recomputed here without the package: the median delay per
    # origin and scheduled hour of the 6 training days.
    days = flights[schema.DAY].dt.date
    hour = flights["sched_dep_time"] // 100
    train_rows = (days >= got.train_start) & (days < got.holdout_start)
    held_rows = (days >= got.holdout_start) & (days <= day)
    medians = flights[train_rows].groupby(["origin", hour[train_rows]])["arr_delay"].median()
    held = flights[held_rows]
    fallback = flights[train_rows].groupby("origin")["arr_delay"].median()
    predicted = [
        medians.get((o, h), fallback[o])
        for o, h in zip(held["origin"], hour[held_rows], strict=True)
    ]
    assert got.baseline_mae == pytest.approx(
        np.mean(np.abs(np.array(predicted) - held["arr_delay"]))
    )
    # The model's MAE is the pipeline's: featurize, split with history, train, predict.
    window = flights[(days >= got.train_start) & (days <= day)]
    features, _ = flight_features.build_features(window, weather)
    train_frame, holdout = split.split_with_history(features, day, 2, 2, 4)
    model = train.fit_model(train_frame, settings.train)
    expected = np.mean(np.abs(fitted.predict(model, holdout) - holdout[schema.TARGET]))
    assert got.challenger_mae == pytest.approx(expected)
    # Without a champion the baseline is champion, scored on the same holdout.
    assert (got.champion, got.champion_mae) == ("baseline", got.baseline_mae)
    rule = promotion.decide(
        got.challenger_mae, got.baseline_mae, day, None, 0.01, "baseline",
        baseline_mae=got.baseline_mae,
    )  # fmt: skip
    assert got.decision == rule.label and got.reason.startswith(rule.reason)
    assert got.seconds > 0


def test_replay_run_scores_a_carried_champion_on_the_same_holdout(tmp_path):
    flights, weather = raw_frames()
    settings = small_settings(tmp_path)
    first, champion_model = backtest.replay_run(
        flights, weather, FIRST + timedelta(days=8), settings
    )
    day = FIRST + timedelta(days=10)
    champion = backtest.Champion(first.holdout_end, champion_model)

    got, _model = backtest.replay_run(flights, weather, day, settings, champion)

    _alone, again = backtest.replay_run(flights, weather, day, settings)
    holdout = split.split_with_history(
        flight_features.build_features(
            flights[flights[schema.DAY].dt.date.between(got.train_start, day)], weather
        )[0],
        day,
        2,
        2,
        4,
    )[1]
    actual = holdout[schema.TARGET].to_numpy()
    expected = np.mean(np.abs(fitted.predict(champion_model, holdout) - actual))
    assert got.champion == f"model of {first.holdout_end.isoformat()}"
    assert got.champion_mae == pytest.approx(expected)
    assert got.challenger_mae == pytest.approx(
        np.mean(np.abs(fitted.predict(again, holdout) - actual))
    )
    rule = promotion.decide(
        got.challenger_mae, got.champion_mae, day, first.holdout_end, 0.01, got.champion,
        baseline_mae=got.baseline_mae,
    )  # fmt: skip
    assert got.decision == rule.label and got.reason.startswith(rule.reason)
    assert got.champion in got.reason


def test_run_backtest_reports_each_run_in_order(tmp_path):
    flights, weather = raw_frames()
    ends = [FIRST + timedelta(days=9), FIRST + timedelta(days=11)]
    seen = []
    results = backtest.run_backtest(
        flights, weather, ends, small_settings(tmp_path), on_result=seen.append
    )
    assert [r.holdout_end for r in results] == ends
    assert seen == results
    with pytest.raises(ValueError, match="no holdout ends"):
        backtest.run_backtest(flights, weather, [], small_settings(tmp_path))
    with pytest.raises(ValueError, match="increasing order"):
        backtest.run_backtest(flights, weather, ends[::-1], small_settings(tmp_path))


@pytest.mark.parametrize("margin", [0.0, 0.99])
def test_the_champion_is_carried_forward_by_the_promotion_rule(tmp_path, margin):
    flights, weather = raw_frames(days=16)
    settings = small_settings(tmp_path)
    settings = replace(settings, score=replace(settings.score, promotion_margin=margin))
    ends = [FIRST + timedelta(days=d) for d in (9, 11, 13, 15)]

    results = backtest.run_backtest(flights, weather, ends, settings)

    champion = "baseline"
    for r in results:
        # each run faces the challenger of the last promotion before it, or the baseline
        assert r.champion == champion
        if champion == "baseline":
            assert r.champion_mae == r.baseline_mae
        if r.decision == "promoted":
            champion = f"model of {r.holdout_end.isoformat()}"
    promoted = [r.decision == "promoted" for r in results]
    if margin == 0.99:  # a 99 % margin: nobody ever beats the baseline by that much
        assert promoted == [False] * 4
    else:  # the model learns the rain and the hour: it beats the baseline on run one
        assert promoted[0] and any(r.champion != "baseline" for r in results)
        # ... and run two scores that very model (fits are deterministic: refit it)
        _first, model = backtest.replay_run(flights, weather, ends[0], settings)
        carried = backtest.Champion(ends[0], model)
        again, _ = backtest.replay_run(flights, weather, ends[1], settings, carried)
        assert results[1].champion_mae == again.champion_mae != results[1].baseline_mae


def test_table_summary_and_markdown_by_hand():
    results = [
        result(date(2013, 4, 2), 18.0, 20.0, decision="promoted"),  # +10 %, champion 0 %
        result(date(2013, 4, 30), 31.5, 30.0, champion=27.0),  # -5 %, champion +10 %
        result(date(2013, 5, 28), 24.0, 25.0, champion=26.0),  # +4 %, champion -4 %
    ]
    table = backtest.results_table(results)
    assert list(table.columns) == [
        "holdout_end",
        "holdout_start",
        "train_start",
        "train_rows",
        "holdout_rows",
        "challenger_mae",
        "champion_mae",
        "baseline_mae",
        "champion",
        "decision",
        "reason",
        "seconds",
        "served_mae",
        "served_step_down",
        "served_flights",
        "served_baseline_mae",
        "improvement_pct",
        "champion_improvement_pct",
    ]
    np.testing.assert_allclose(table["improvement_pct"], [10.0, -5.0, 4.0])
    np.testing.assert_allclose(table["champion_improvement_pct"], [0.0, 10.0, -4.0])
    summary = backtest.summarize(results)
    assert summary["runs"] == 3
    assert summary["share_beaten"] == pytest.approx(2 / 3)
    assert summary["mean_improvement_pct"] == pytest.approx(3.0)
    assert summary["median_improvement_pct"] == pytest.approx(4.0)
    assert summary["worst_improvement_pct"] == pytest.approx(-5.0)
    assert summary["promotions"] == 1
    assert summary["mean_champion_improvement_pct"] == pytest.approx(2.0)
    assert summary["worst_champion_improvement_pct"] == pytest.approx(-4.0)
    assert summary["mean_baseline_mae"] == pytest.approx(25.0)
    assert summary["mean_champion_mae"] == pytest.approx(73 / 3)
    markdown = backtest.to_markdown(results)
    assert (
        "| 2013-03-27..2013-04-02 | 1,000 | 100 | 18.00 | baseline | 20.00 | 20.00 | +10.0% "
        "| +0.0% | **promoted** |"
    ) in markdown
    assert (
        "| 2013-04-24..2013-04-30 | 1,000 | 100 | 31.50 | model of 2013-03-26 | 27.00 | 30.00 "
        "| -5.0% | +10.0% | kept |"
    ) in markdown
    assert "on 2 of 3 holdouts (67%)" in markdown
    assert "mean +3.0%" in markdown and "worst -5.0%" in markdown
    assert "1 promotions, 0 step-downs" in markdown and "mean +2.0%, worst -4.0%" in markdown
    assert "served vs baseline" in markdown


def test_history_frame_is_what_the_metric_history_chart_draws():
    results = [
        result(date(2013, 4, 2), 18.0, 20.0, decision="promoted"),
        result(date(2013, 4, 9), 17.0, 18.0, champion=17.5),
    ]
    history = backtest.history_frame(results)
    assert list(history.columns) == [
        "processed_day",
        "challenger_mae",
        "champion_mae",
        "baseline_mae",
        "decision",
    ]
    assert history["processed_day"].tolist() == [date(2013, 4, 2), date(2013, 4, 9)]
    assert history["champion_mae"].tolist() == [20.0, 17.5]
    assert history["decision"].tolist() == ["promoted", "kept"]


def test_the_halves_summarize_the_holdouts_on_each_side_of_the_day():
    results = [
        result(date(2013, 6, 23), 18.0, 20.0, decision="promoted"),  # +10 %
        result(date(2013, 6, 30), 31.5, 30.0, champion=27.0),  # -5 %, served +10 %
        result(date(2013, 7, 7), 24.0, 25.0, champion=26.0),  # +4 %, served -4 %
    ]
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in backtest.halves_table(results, date(2013, 6, 30)).splitlines()[2:]
    }
    assert list(rows) == ["ending by 2013-06-30", "ending after 2013-06-30", "all"]
    first, second, both = rows.values()
    assert first[1:4] == ["2", "1 (50%)", "+2.50%"] and first[5] == "+0.00%"
    assert second[1:6] == ["1", "1 (100%)", "+4.00%", "-4.00%", "-4.00%"]
    assert both[1] == "3" and both[5] == "-4.00%"
    # one side empty: no row for it; the markdown carries the table only when asked
    only = backtest.halves_table(results, date(2013, 12, 31)).splitlines()[2:]
    assert [line.split(" | ")[0] for line in only] == ["| ending by 2013-12-31", "| all"]
    assert "By half" not in backtest.to_markdown(results)
    assert "By half, split at 2013-06-30" in backtest.to_markdown(results, date(2013, 6, 30))


def test_main_writes_the_table_the_markdown_and_the_chart(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train: {max_iter: 10, min_samples_leaf: 20}\n")
    out = tmp_path / "bt"
    code = backtest.main(
        [
            "--every",
            "14",
            "--window",
            "10",
            "--holdout",
            "2",
            "--first-end",
            "2013-12-10",
            "--last-end",
            "2013-12-24",
            "--halves-at",
            "2013-12-17",
            "--out",
            str(out),
            "--params",
            str(params),
            "--root",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / backtest.TABLE_FILE)
    assert table["holdout_end"].tolist() == ["2013-12-10", "2013-12-24"]
    assert (table["train_rows"] > 0).all() and (table["holdout_rows"] > 0).all()
    maes = ["challenger_mae", "champion_mae", "baseline_mae", "improvement_pct"]
    assert np.isfinite(table[maes]).all().all()
    assert set(table["decision"]) <= {"promoted", "kept"}
    assert table["champion"].iloc[0] == "baseline"
    markdown = (out / backtest.MARKDOWN_FILE).read_text()
    assert "2013-12-23..2013-12-24" in markdown and "of 2 holdouts" in markdown
    printed = capsys.readouterr().out
    for row in ("| ending by 2013-12-17 | 1 |", "| ending after 2013-12-17 | 1 |", "| all | 2 |"):
        assert row in markdown and row in printed, (row, printed)
    assert (out / backtest.CHART_FILE).read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [backtest.TABLE_FILE, backtest.MARKDOWN_FILE, backtest.CHART_FILE]
    )


def test_main_names_a_bad_configuration(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    args = ["--params", str(params), "--root", str(tmp_path), "--out", str(tmp_path / "bt")]
    assert backtest.main([*args, "--window", "5", "--holdout", "7"]) == 1
    assert "holdout_days" in capsys.readouterr().err
    assert backtest.main([*args, "--first-end", "2014-01-01"]) == 1
    assert "no holdout ends" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        backtest.main(["--every", "0"])
    assert not (tmp_path / "bt").exists()


def test_after_a_step_down_the_baseline_serves_again(monkeypatch, tmp_path):
    """run_backtest carries the champion as the registry does: a promotion makes the
    run's model champion, a step-down makes the baseline champion again."""
    ends = [date(2013, 4, 2), date(2013, 4, 9), date(2013, 4, 16), date(2013, 4, 23)]
    decisions = iter(["promoted", "stepped down", "kept", "kept"])
    faced = []

    def scripted(flights, weather, day, settings, champion, state, served_after=None):
        faced.append(None if champion is None else champion.day)
        label = next(decisions)
        if label == "promoted":
            state = backtest.Serving(day)
        elif label == "stepped down":
            state = backtest.Serving(None, baseline_since=day)
        return result(day, 20.0, 20.0, decision=label), f"model of {day}", state

    monkeypatch.setattr(backtest, "replay_week", scripted)
    results = backtest.run_backtest(None, None, ends, small_settings(tmp_path))

    assert faced == [None, date(2013, 4, 2), None, None]
    assert backtest.summarize(results)["step_downs"] == 1
    assert "**stepped down**" in backtest.to_markdown(results)


# --- the served days, one morning at a time ---------------------------------------------
W = [date(2013, 11, 12) + timedelta(days=k) for k in range(4)]  # the run's day is W[3]
# The inline days hold a handful of flights each: every one is judged.
SERVED = ScoreSettings(served_margin=0.1, served_bad_days=2, served_days=2, served_min_flights=1)


def errors(maes, flights=10):
    return [backtest.DayError(d, flights, m * flights) for d, m in zip(W, maes, strict=True)]


def test_a_champion_steps_down_in_the_middle_of_the_week_and_the_baseline_serves_on():
    state = backtest.Serving(date(2013, 11, 5))
    champion, baseline = errors([12.0, 12.0, 5.0, 5.0]), errors([10.0, 10.0, 10.0, 10.0])

    after, week = backtest.serve_week(state, W[3], champion, baseline, SERVED)

    # Worse by 20 % on W[0] and W[1]: 2 of 2, down after W[1]; W[2], W[3] by the baseline.
    assert week.step_down_day == W[1] and "steps down" in week.step_down_reason
    assert after == backtest.Serving(None, baseline_since=W[1])
    assert week.served_mae == pytest.approx((12 + 12 + 10 + 10) / 4)
    assert week.baseline_mae == pytest.approx(10.0)
    assert week.pending is None
    # The run's night judges the challenger against the baseline; a kept one stays out.
    kept = promotion.Decision(False, "kept")
    assert backtest.after_run(after, W[3], kept, week.pending) == (after, kept)


def test_the_verdict_on_the_runs_own_day_waits_for_rules_1_to_4():
    state = backtest.Serving(date(2013, 11, 5))
    champion, baseline = errors([9.0, 9.0, 12.0, 12.0]), errors([10.0] * 4)

    morning, week = backtest.serve_week(state, W[3], champion, baseline, SERVED)

    assert week.step_down_day is None and morning.champion_day == date(2013, 11, 5)
    assert week.served_mae == pytest.approx(10.5)  # the model served all four days
    assert week.pending is not None and week.pending.step_down
    assert [s.day for s in morning.history] == W
    kept, promoted = promotion.Decision(False, "kept"), promotion.Decision(True, "better")
    down, decision = backtest.after_run(morning, W[3], kept, week.pending)
    assert decision.step_down and down == backtest.Serving(None, baseline_since=W[3])
    new, decision = backtest.after_run(morning, W[3], promoted, week.pending)
    assert decision.promote and new == backtest.Serving(W[3])  # a fresh served history


def test_a_day_with_no_flights_is_skipped_never_counted():
    state = backtest.Serving(date(2013, 11, 5))
    champion = errors([12.0, 12.0, 12.0, 12.0])
    champion[1] = backtest.DayError(W[1], 0, 0.0)
    baseline = [*errors([10.0] * 4)]
    baseline[1] = backtest.DayError(W[1], 0, 0.0)

    after, week = backtest.serve_week(state, W[3], champion, baseline, SERVED)

    # W[0] bad, W[1] nothing served (skipped), W[2] bad: 2 of the last 2 served days.
    assert week.step_down_day == W[2]
    assert after.baseline_since == W[2]
    assert week.flights == 30


def test_while_the_baseline_serves_it_is_the_served_score():
    baseline = errors([10.0, 11.0, 12.0, 13.0])
    after, week = backtest.serve_week(backtest.Serving(), W[3], None, baseline, SERVED)
    assert after == backtest.Serving() and week.served_mae == week.baseline_mae == 11.5
    with pytest.raises(ValueError, match="exactly when a model is champion"):
        backtest.serve_week(backtest.Serving(), W[3], baseline, baseline, SERVED)


def test_daily_errors_sum_each_days_absolute_errors():
    holdout = pd.DataFrame(
        {schema.DAY: pd.to_datetime(["2013-11-13", "2013-11-12", "2013-11-13"]),
         schema.TARGET: [10.0, -5.0, 0.0]}
    )  # fmt: skip
    got = backtest.daily_errors(holdout, [12.0, -5.0, 3.0])
    assert got == [
        backtest.DayError(date(2013, 11, 12), 1, 0.0),
        backtest.DayError(date(2013, 11, 13), 2, 5.0),
    ]


def test_the_backtest_serves_each_day_with_the_champion_of_that_morning(tmp_path, monkeypatch):
    """A real tiny backtest where every model's predictions go 50 minutes wrong on one
    day, the first holdout day of the last run: rule 5 (any day worse by 10 %) steps the
    champion down after it, and the baseline serves the run's second day. A rule that
    never fires leaves the champion serving both days."""
    flights, weather = raw_frames(days=16)
    settings = small_settings(tmp_path)
    ends = [FIRST + timedelta(days=d) for d in (9, 11, 13, 15)]
    bad_day = FIRST + timedelta(days=14)
    predict = fitted.predict

    def spoiled(model, frame):
        on_bad_day = (pd.to_datetime(frame[schema.DAY]).dt.date == bad_day).to_numpy()
        return predict(model, frame) + 50.0 * on_bad_day

    monkeypatch.setattr(fitted, "predict", spoiled)
    never = replace(settings.score, promotion_margin=0.0, served_margin=9.0)
    quick = replace(never, served_margin=0.1, served_bad_days=1, served_days=1)

    calm = backtest.run_backtest(flights, weather, ends, replace(settings, score=never))
    fast = backtest.run_backtest(flights, weather, ends, replace(settings, score=quick))

    for r in calm:
        assert r.served_mae == pytest.approx(r.champion_mae) and r.served_step_down is None
    assert [r.served_step_down for r in fast] == [None, None, None, bad_day]
    same = [
        replace(r, seconds=f.seconds, reason=f.reason)
        for r, f in zip(calm[:3], fast[:3], strict=True)
    ]
    assert fast[:3] == same
    last, before = fast[3], calm[3]
    assert before.champion.startswith("model of") and last.champion == "baseline"
    assert last.challenger_mae == before.challenger_mae
    assert "steps down within the day" in last.reason
    # Served: the champion model on the bad day, the baseline on the run's own day.
    champion_day = date.fromisoformat(before.champion.removeprefix("model of "))
    _r, champion = backtest.replay_run(flights, weather, champion_day, settings)
    train_frame, holdout = backtest.window_frames(flights, weather, ends[3], settings)
    baseline = OriginHourMedianBaseline().fit(train_frame).predict(holdout)
    served = np.where(
        pd.to_datetime(holdout[schema.DAY]).dt.date == bad_day,
        spoiled(champion, holdout),
        baseline,
    )
    actual = holdout[schema.TARGET].to_numpy(dtype=float)
    assert last.served_mae == pytest.approx(np.mean(np.abs(served - actual)))


def test_nightly_runs_serve_only_the_days_after_the_previous_run():
    """Runs closer than a holdout (nightly): the days the previous run served are not
    served, counted or judged again."""
    state = backtest.Serving(date(2013, 11, 5))
    champion, baseline = errors([12.0, 12.0, 12.0, 9.0]), errors([10.0] * 4)

    morning, week = backtest.serve_week(state, W[3], champion, baseline, SERVED, after=W[2])

    assert week.flights == 10 and week.served_mae == pytest.approx(9.0)
    assert week.baseline_mae == pytest.approx(10.0)
    assert [s.day for s in morning.history] == [W[3]]  # W[0..2] were judged before
    assert week.step_down_day is None and not week.pending.step_down


def test_served_weeks_weigh_each_served_day_by_its_flights():
    """Seven nightly runs are one week; the week's served improvement is over its flights,
    not the mean of the nights'."""
    last = date(2013, 12, 31)
    nights = [
        replace(
            result(last - timedelta(days=k), 20.0, 10.0, champion=10.0),
            served_mae=served,
            served_flights=flights,
            served_baseline_mae=10.0,
        )
        for k, (served, flights) in enumerate([(9.0, 100)] * 6 + [(20.0, 400)] + [(5.0, 10)])
    ]
    weeks = backtest.served_weeks(sorted(nights, key=lambda r: r.holdout_end))
    # Oldest first: the 8th night back is a week of its own; then 6 x 100 at 9, 400 at 20.
    assert weeks[0] == pytest.approx(50.0)
    assert weeks[1] == pytest.approx(100 * (1 - (600 * 9 + 400 * 20) / (1000 * 10)))
    summary = backtest.summarize(nights)
    assert summary["served_weeks"] == 2
    assert summary["worst_served_week_pct"] == pytest.approx(weeks[1])
