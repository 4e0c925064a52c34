"""flight_delays.chart: every chart has a title, unit-labelled axes and a legend; the
wrapper writes the PNGs."""

from __future__ import annotations

import json
import logging
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from flight_delays import chart, score, train
from flight_delays.base import schema
from flight_delays.model.scoring import mae_by_group
from flight_delays.monitor import report
from flight_delays.store import artifacts, io

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _predictions(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    actual = rng.normal(5, 30, n)
    return pd.DataFrame(
        {
            schema.SCHED_HOUR: rng.integers(5, 23, n),
            "actual": actual,
            "predicted": actual + rng.normal(0, 10, n),
            "baseline": np.full(n, 2.0),
        }
    )


def _check_axes(fig: Figure, xlabel: str, ylabel: str, legend_has: str) -> None:
    ax = fig.axes[0]
    assert ax.get_title()
    assert ax.get_xlabel() == xlabel
    assert ax.get_ylabel() == ylabel
    assert "minutes" in ax.get_xlabel() + ax.get_ylabel()
    legend = ax.get_legend()
    assert legend is not None
    texts = [text.get_text() for text in legend.get_texts()]
    assert any(legend_has in text for text in texts), texts


def test_predicted_vs_actual_labels_and_identity_line() -> None:
    frame = _predictions()
    fig = chart.predicted_vs_actual(frame["actual"], frame["predicted"])
    _check_axes(fig, "Actual arrival delay (minutes)", "Predicted arrival delay (minutes)", "y = x")
    identity = [line for line in fig.axes[0].get_lines() if "y = x" in line.get_label()]
    x, y = identity[0].get_data()
    np.testing.assert_array_equal(x, y)
    # The colour bar says what the colour counts.
    assert fig.axes[1].get_ylabel() == "Flights per cell"


def test_residual_distribution_labels_and_median() -> None:
    residuals = np.array([-10.0, -1.0, 2.0, 3.0, 50.0])
    fig = chart.residual_distribution(residuals)
    _check_axes(fig, "Residual: predicted \N{MINUS SIGN} actual (minutes)", "Flights", "Median")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Median +2.0 min" in texts


def test_mae_by_hour_one_line_per_predictor() -> None:
    table = mae_by_group(_predictions(), schema.SCHED_HOUR, "actual", ["predicted", "baseline"])
    fig = chart.mae_by_hour(table)
    _check_axes(
        fig, "Scheduled departure hour (local time)", "Mean absolute error (minutes)", "Model"
    )
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        chart.SERIES_LABELS["predicted"],
        chart.SERIES_LABELS["baseline"],
    ]
    np.testing.assert_allclose(lines[0].get_ydata(), table["predicted"])


def test_charts_draw_on_a_given_axes() -> None:
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert chart.residual_distribution([1.0, 2.0, 3.0], ax=right) is fig
    assert right.get_xlabel().endswith("(minutes)")
    assert not left.get_xlabel()


def test_charts_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        chart.residual_distribution([])
    with pytest.raises(ValueError, match="actual has 2 values but predicted has 1"):
        chart.predicted_vs_actual([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="1 non-finite"):
        chart.residual_distribution([1.0, np.nan])


def test_run_writes_pngs(split_artifacts, caplog) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params)
    score.run(day, root=root, params_file=params)

    with caplog.at_level(logging.INFO, logger="flight_delays.chart"):
        result = chart.run(day.isoformat(), root=root, params_file=params)

    # One summary line: rows in, figures out, seconds, the challenger's holdout MAE.
    lines = [r.getMessage() for r in caplog.records if r.name == "flight_delays.chart"]
    assert len(lines) == 1, lines
    metrics = json.loads(
        (artifacts.OUTPUT.path(art["settings"].paths.root, day) / "metrics.json").read_text()
    )
    assert re.fullmatch(
        rf"chart {day}: {len(art['holdout'])} holdout flights in, 6 figures out; challenger "
        rf"holdout MAE {metrics['model']['mae']:.2f} min \(baseline "
        rf"{metrics['baseline']['mae']:.2f}\) in \d+\.\d s -> figures .+/, report .+index\.html",
        lines[0],
    ), lines[0]

    folder = artifacts.FIGURES.path(art["settings"].paths.root, day)
    expected = [folder / name for name in chart.FIGURE_FILES.values()]
    assert result["figures"] == [str(path) for path in expected]
    for path in expected:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in folder.iterdir()) == sorted(chart.FIGURE_FILES.values())

    # The report shows the decision, the metrics table and every figure, by relative link.
    page = Path(result["report"])
    assert page == artifacts.REPORT_DIR.path(art["settings"].paths.root, day) / "index.html"
    html = page.read_text()
    assert metrics["decision"]["reason"].replace("<", "&lt;").replace(">", "&gt;") in html
    assert f"{metrics['model']['mae']:.2f}" in html and "Champion" in html
    for name in chart.FIGURE_FILES.values():
        assert f'src="../figures/ds={day.isoformat()}/{name}"' in html
        assert (page.parent / "../figures" / f"ds={day.isoformat()}" / name).is_file()
    # ... and what featurize left out or changed, each count beside its label
    counts = art["feature_counts"]
    for key, label in report.DATA_COUNTS:
        assert f'{label}</th><td class="num">{counts[key]:,}</td>' in html.replace("&#x27;", "'")


def test_run_without_feature_counts_names_the_featurize_task(split_artifacts) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params)
    score.run(day, root=root, params_file=params)
    (artifacts.PROCESSED.path(art["settings"].paths.root, day) / "feature_counts.json").unlink()
    with pytest.raises(io.MissingArtifactError, match="'featurize' task"):
        chart.run(day.isoformat(), root=root, params_file=params)


# --- calibration ---------------------------------------------------------------------
# Two bins of four flights, given out of order so the table must bin by the prediction.
# Bin 0: predictions 0-3, actual 0, 10, 20, 30; bin 1: predictions 10-13, actual 5, 15,
# 25, 100. Quartiles interpolate linearly: 7.5/15/22.5 and 12.5/20/43.75. Late means
# 15 minutes or more (BTS), so 15 counts: 2 of 4 and 3 of 4.
CALIBRATION_FLIGHTS = pd.DataFrame(
    {
        "predicted": [13.0, 0.0, 11.0, 2.0, 10.0, 3.0, 12.0, 1.0],
        "actual": [100.0, 0.0, 15.0, 20.0, 5.0, 30.0, 25.0, 10.0],
    }
)


def test_calibration_table_medians_quartiles_and_late_share_per_bin() -> None:
    table = chart.calibration_table(
        CALIBRATION_FLIGHTS["actual"], CALIBRATION_FLIGHTS["predicted"], bins=2
    )
    assert list(table.columns) == list(chart.CALIBRATION_COLUMNS)
    assert list(table["n"]) == [4, 4]
    np.testing.assert_allclose(table["predicted_median"], [1.5, 11.5])
    np.testing.assert_allclose(table["actual_q25"], [7.5, 12.5])
    np.testing.assert_allclose(table["actual_median"], [15.0, 20.0])
    np.testing.assert_allclose(table["actual_q75"], [22.5, 43.75])
    np.testing.assert_allclose(table["late_share"], [0.5, 0.75])


def test_calibration_table_puts_a_median_model_on_the_diagonal() -> None:
    # Right-skewed delays around a median prediction (what an absolute-error model
    # learns): the medians agree, the means would not (exponential: mean 20 min above).
    rng = np.random.default_rng(3)
    predicted = rng.uniform(-20, 40, 20_000)
    actual = predicted + rng.exponential(20.0, predicted.size) - 20.0 * np.log(2)
    table = chart.calibration_table(actual, predicted)
    assert len(table) == 10
    np.testing.assert_allclose(table["actual_median"], table["predicted_median"], atol=2.0)
    assert (table["actual_q25"] < table["actual_median"]).all()
    assert (table["actual_median"] < table["actual_q75"]).all()


def test_calibration_table_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="actual has 2 values but predicted has 3"):
        chart.calibration_table([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="bins must be at least 1"):
        chart.calibration_table([1.0], [1.0], bins=0)
    with pytest.raises(ValueError, match="predicted has 1 non-finite"):
        chart.calibration_table([1.0, 2.0], [1.0, np.inf])


def _line(ax, label: str):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_calibration_draws_medians_band_diagonal_and_late_share() -> None:
    table = chart.calibration_table(
        CALIBRATION_FLIGHTS["actual"], CALIBRATION_FLIGHTS["predicted"], bins=2
    )
    fig = chart.calibration(table)
    ax, share_ax = fig.axes
    # Delay panel: medians against the bin's median prediction, minutes on both axes.
    median = _line(ax, "Actual: median")
    np.testing.assert_allclose(median.get_xdata(), [1.5, 11.5])
    np.testing.assert_allclose(median.get_ydata(), [15.0, 20.0])
    diagonal = _line(ax, "Perfect calibration (y = x)")
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    assert tuple(diagonal.get_xdata()) == ax.get_xlim()  # the line spans the panel
    # The band: its outline runs through both quartiles of both bins.
    (band,) = ax.collections
    assert band.get_label() == "Actual: 25th\N{EN DASH}75th percentile"
    outline = band.get_paths()[0].vertices
    for x, low, high in [(1.5, 7.5, 22.5), (11.5, 12.5, 43.75)]:
        at_x = outline[np.isclose(outline[:, 0], x), 1]
        assert np.isclose(at_x, low).any() and np.isclose(at_x, high).any(), at_x
    y_low, y_high = ax.get_ylim()
    assert y_low < 1.5 - 1 and y_high > 43.75  # band and diagonal inside the panel
    assert ax.get_ylabel() == "Actual arrival delay (minutes)"
    # Share panel: % of flights 15+ min late per bin, and over all flights.
    share = _line(share_ax, "Per bin")
    np.testing.assert_allclose(share.get_xdata(), [1.5, 11.5])
    np.testing.assert_allclose(share.get_ydata(), [50.0, 75.0])
    overall = _line(share_ax, "All flights: 62%")
    np.testing.assert_allclose(overall.get_ydata(), [62.5, 62.5])
    assert share_ax.get_ylim() == (-5.0, 105.0)
    assert share_ax.get_ylabel() == "Arrived 15+ min late (% of flights)"
    assert share_ax.get_xlabel() == "Median predicted arrival delay in the bin (minutes)"
    assert share_ax.get_xlim() == ax.get_xlim()
    _assert_markers_inside(fig)


def test_calibration_on_a_given_axes_puts_the_share_on_a_twin_axis() -> None:
    table = chart.calibration_table(
        CALIBRATION_FLIGHTS["actual"], CALIBRATION_FLIGHTS["predicted"], bins=2
    )
    fig = Figure()
    ax = fig.add_subplot()
    assert chart.calibration(table, ax=ax) is fig
    ax_twin = [other for other in fig.axes if other is not ax]
    assert len(ax_twin) == 1
    np.testing.assert_allclose(_line(ax_twin[0], "Per bin").get_ydata(), [50.0, 75.0])
    assert ax_twin[0].get_ylabel().endswith("(% of flights)")
    assert ax.get_xlabel().endswith("(minutes)") and ax.get_ylabel().endswith("(minutes)")


def test_calibration_names_missing_columns() -> None:
    old_style = pd.DataFrame({"predicted": [1.0], "actual": [2.0], "n": [1]})
    with pytest.raises(ValueError, match="actual_median, actual_q25, actual_q75, late_share"):
        chart.calibration(old_style)
    empty = pd.DataFrame(columns=list(chart.CALIBRATION_COLUMNS))
    with pytest.raises(ValueError, match="non-empty"):
        chart.calibration(empty)


# --- metric history ------------------------------------------------------------------
def _history(days: int, first: date = date(2013, 3, 15)) -> pd.DataFrame:
    """``days`` consecutive runs; the baseline is the highest value on every day."""
    rng = np.random.default_rng(days)
    return pd.DataFrame(
        {
            "processed_day": [first + timedelta(days=k) for k in range(days)],
            "challenger_mae": rng.uniform(15, 25, days),
            "champion_mae": rng.uniform(15, 25, days),
            "baseline_mae": rng.uniform(26, 35, days),
            "decision": ["promoted" if k % 3 == 0 else "kept" for k in range(days)],
        }
    )


def _marker_radius_px(fig: Figure, points: float) -> float:
    return points * fig.dpi / 72.0


def _assert_markers_inside(fig: Figure) -> None:
    """Every marker of every Axes of ``fig`` lies wholly inside its Axes, as drawn:
    centre and radius in pixels against the Axes' box."""
    fig.canvas.draw()  # settle the constrained layout
    for ax in fig.axes:
        box = ax.get_window_extent()
        drawn = []
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " "):
                continue
            xy = np.asarray(line.get_xydata(), dtype=float)  # dates as numbers
            radius = _marker_radius_px(fig, line.get_markersize() / 2 + line.get_markeredgewidth())
            drawn.append((line.get_label(), xy, radius))
        for coll in ax.collections:
            sizes = coll.get_sizes() if hasattr(coll, "get_sizes") else []
            if len(sizes) == 0 or len(coll.get_offsets()) == 0:
                continue
            width = max(coll.get_linewidths(), default=0.0)
            radius = _marker_radius_px(fig, np.sqrt(max(sizes)) / 2 + width / 2)
            drawn.append((coll.get_label(), np.asarray(coll.get_offsets(), dtype=float), radius))
        for label, xy, radius in drawn:
            pixels = ax.transData.transform(xy)
            inside = (
                (pixels[:, 0] - radius >= box.x0)
                & (pixels[:, 0] + radius <= box.x1)
                & (pixels[:, 1] - radius >= box.y0)
                & (pixels[:, 1] + radius <= box.y1)
            )
            assert inside.all(), f"{label}: {int((~inside).sum())} marker(s) cut by the axes"


def _date_limits(ax) -> tuple[pd.Timestamp, pd.Timestamp]:
    from matplotlib.dates import num2date

    low, high = (pd.Timestamp(num2date(v)).tz_localize(None) for v in ax.get_xlim())
    return low, high


def _tick_days(fig: Figure, ax) -> list[pd.Timestamp]:
    from matplotlib.dates import num2date

    fig.canvas.draw()
    low, high = ax.get_xlim()
    return [
        pd.Timestamp(num2date(v)).tz_localize(None) for v in ax.get_xticks() if low <= v <= high
    ]


def test_marker_check_catches_a_cut_marker() -> None:
    # The first-run chart as it was: the baseline's marker on the top edge.
    fig = chart.metric_history(_history(1))
    ax = fig.axes[0]
    ax.set_ylim(0, float(_history(1)["baseline_mae"].iloc[0]))
    with pytest.raises(AssertionError, match="Baseline"):
        _assert_markers_inside(fig)


def test_metric_history_of_a_first_run_shows_a_labelled_week() -> None:
    history = _history(1)
    fig = chart.metric_history(history)
    (ax,) = fig.axes
    low, high = _date_limits(ax)
    assert (low, high) == (pd.Timestamp("2013-03-12"), pd.Timestamp("2013-03-18"))
    ticks = _tick_days(fig, ax)
    assert ticks == list(pd.date_range("2013-03-12", "2013-03-18"))  # one per day
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "Fri\n15 Mar\n2013" in labels
    challenger = _line(ax, "Challenger (the run's model)")
    np.testing.assert_allclose(challenger.get_ydata(), history["challenger_mae"])
    assert ax.get_ylim()[0] == 0.0
    assert ax.get_ylim()[1] > history["baseline_mae"].max()
    assert ax.get_title() == "Holdout MAE over 1 processed day"
    _assert_markers_inside(fig)


def test_metric_history_of_three_runs_labels_every_day() -> None:
    history = _history(3)
    fig = chart.metric_history(history)
    (ax,) = fig.axes
    assert _date_limits(ax) == (pd.Timestamp("2013-03-13"), pd.Timestamp("2013-03-19"))
    ticks = _tick_days(fig, ax)
    assert set(pd.to_datetime(history["processed_day"])) <= set(ticks)
    assert ax.get_ylabel() == chart.MAE_LABEL
    assert ax.get_xlabel() == chart.PROCESSED_DAY_LABEL
    promoted = [c for c in ax.collections if c.get_label().startswith("Promoted")]
    assert len(promoted[0].get_offsets()) == 1  # day 0 of 0..2
    _assert_markers_inside(fig)


def test_metric_history_of_a_year_keeps_few_ticks_and_a_tight_axis() -> None:
    history = _history(300)
    fig = chart.metric_history(history)
    (ax,) = fig.axes
    low, high = _date_limits(ax)
    first, last = pd.Timestamp("2013-03-15"), pd.Timestamp("2013-03-15") + pd.Timedelta(days=299)
    assert first - pd.Timedelta(days=10) <= low < first
    assert last < high <= last + pd.Timedelta(days=10)
    assert 3 <= len(_tick_days(fig, ax)) <= 14
    np.testing.assert_allclose(
        _line(ax, "Baseline (origin \N{MULTIPLICATION SIGN} hour median)").get_ydata(),
        history["baseline_mae"],
    )
    _assert_markers_inside(fig)


def test_metric_history_keeps_a_zero_mae_marker_inside() -> None:
    history = _history(2).assign(challenger_mae=[0.0, 10.0])
    fig = chart.metric_history(history)
    assert fig.axes[0].get_ylim()[0] < 0.0
    _assert_markers_inside(fig)


def test_metric_history_marks_promotions_and_keeps_the_last_rerun() -> None:
    history = pd.DataFrame(
        {
            "processed_day": [date(2013, 3, 1), date(2013, 3, 2), date(2013, 3, 2)],
            "challenger_mae": [20.0, 30.0, 18.0],
            "champion_mae": [22.0, 20.0, 20.0],
            "baseline_mae": [22.0, 22.0, 22.0],
            "decision": ["promoted", "kept", "promoted"],
        }
    )
    fig = chart.metric_history(history)
    (ax,) = fig.axes
    assert ax.get_ylabel() == chart.MAE_LABEL and "day" in ax.get_xlabel().lower()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Promoted (2)" in labels
    challenger = ax.get_lines()[0]
    np.testing.assert_allclose(challenger.get_ydata(), [20.0, 18.0])
    assert ax.get_title() == "Holdout MAE over 2 processed days"
    titled = chart.metric_history(history, title="Backtest: holdout MAE")
    assert titled.axes[0].get_title() == "Backtest: holdout MAE over 2 processed days"
    with pytest.raises(ValueError, match="decision"):
        chart.metric_history(history.drop(columns="decision"))
    with pytest.raises(ValueError, match="at least one run"):
        chart.metric_history(history.iloc[:0])


def test_metric_history_crosses_a_step_down_at_the_champions_mae() -> None:
    history = pd.DataFrame(
        {
            "processed_day": [date(2013, 3, 1), date(2013, 3, 8), date(2013, 3, 15)],
            "challenger_mae": [20.0, 30.0, 21.0],
            "champion_mae": [22.0, 27.0, 22.0],
            "baseline_mae": [22.0, 23.0, 22.0],
            "decision": ["promoted", "stepped down", "kept"],
        }
    )
    (ax,) = chart.metric_history(history).axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Promoted (1)" in labels and "Champion stepped down (1)" in labels
    crosses = [c for c in ax.collections if c.get_label() == "Champion stepped down (1)"]
    np.testing.assert_allclose(crosses[0].get_offsets()[:, 1], [27.0])
    # Without a step-down the legend does not offer one.
    calm = chart.metric_history(history.assign(decision=["promoted", "kept", "kept"]))
    assert not any("stepped" in t.get_text() for t in calm.axes[0].get_legend().get_texts())


def test_metric_history_draws_the_served_mae_where_a_day_was_served() -> None:
    from flight_delays.model import serving

    history = pd.DataFrame(
        {
            "processed_day": [date(2013, 3, 1), date(2013, 3, 2), date(2013, 3, 3)],
            "challenger_mae": [20.0, 21.0, 19.0],
            "champion_mae": [22.0, 20.0, 20.0],
            "baseline_mae": [22.0, 22.0, 22.0],
            "decision": ["promoted", "kept", "kept"],
        }
    )
    served = pd.DataFrame(
        {"flight_day": [date(2013, 3, 2), date(2013, 3, 3)], "served_mae": [23.5, 18.0]}
    )
    runs = serving.with_served(history, served)
    assert runs["served_mae"].isna().tolist() == [True, False, False]
    (ax,) = chart.metric_history(runs).axes
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("Served")]
    np.testing.assert_allclose(line.get_ydata(), [23.5, 18.0])
    assert len(line.get_xdata()) == 2  # only the served days
    # Nothing served: no such line.
    (bare,) = chart.metric_history(history).axes
    assert not [ln for ln in bare.get_lines() if ln.get_label().startswith("Served")]


def test_run_without_predictions_names_score_task(tmp_path, model_params_file) -> None:
    with pytest.raises(io.MissingArtifactError, match="'score' task"):
        chart.run("2024-03-10", root=tmp_path, params_file=model_params_file)


def _drift_scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": ["carrier", "distance", "dest", "temp", "recent_nyc_delay"],
            "psi": [0.02, 0.4, 0.12, 5.0, 0.0],
            "threshold": [0.25, 0.25, 0.25, np.nan, np.nan],
        }
    )


def test_drift_chart_draws_the_thresholds_and_says_psi_is_unitless() -> None:
    fig = chart.drift_psi(_drift_scores(), warn=0.1, alert=0.25)
    ax = fig.axes[0]
    assert "PSI" in ax.get_xlabel() and "unitless" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("Feature") and ax.get_xscale() == "log"
    assert "1 watched feature at or above" in ax.get_title()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["Warn: PSI 0.1", "Alert: PSI 0.25"]
    # Top to bottom: the watched features by PSI, then the measured-only ones (starred).
    labels = [
        t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    ]
    assert labels == ["distance", "dest", "carrier", "temp *", "recent_nyc_delay *"]
    bars = sorted(ax.patches, key=lambda p: -p.get_y())
    assert bars[0].get_x() + bars[0].get_width() == pytest.approx(0.4)  # ends at its PSI
    assert len(bars) == 5  # a PSI of 0 is drawn at the axis floor


def test_drift_chart_of_a_day_not_measured_says_why() -> None:
    scores = _drift_scores().assign(psi=np.nan)
    fig = chart.drift_psi(scores, warn=0.1, alert=0.25, skipped="too few flights")
    ax = fig.axes[0]
    assert len(ax.patches) == 0  # no bars
    assert any("Not measured: too few flights" in t.get_text() for t in ax.texts)
    with pytest.raises(ValueError, match=r"drift_psi needs column\(s\): threshold"):
        chart.drift_psi(scores.drop(columns="threshold"), warn=0.1, alert=0.25)


def test_the_report_shows_the_drift_verdict_and_the_watched_features() -> None:
    entry = {
        "warn": 0.1,
        "alert": 0.25,
        "day_rows": 900,
        "window_rows": 70000,
        "features": {"distance": 0.4, "carrier": 0.02, "temp": 5.0},
        "kinds": {"distance": "numeric", "carrier": "categorical", "temp": "numeric"},
        "watched": ["carrier", "distance"],
        "flagged": ["distance"],
        "skipped": None,
    }
    html = report.drift_section(entry)
    assert "flagged: distance" in html and "unitless" in html
    assert html.index("<th>distance</th>") < html.index("<th>carrier</th>")
    assert "<th>temp</th>" not in html
    assert "0.400" in html
    skipped = report.drift_section({**entry, "skipped": "too few flights to measure drift"})
    assert "Input drift not measured: too few flights to measure drift" in skipped
