"""flight_delays.chart: every chart has a title, unit-labelled axes and a legend; the
wrapper writes the PNGs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from flight_delays import chart, io, report, schema, score, train
from flight_delays.scoring import mae_by_group

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


def test_run_writes_pngs(split_artifacts) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params)
    score.run(day, root=root, params_file=params)

    result = chart.run(day.isoformat(), root=root, params_file=params)

    folder = art["settings"].paths.figures(day)
    expected = [folder / name for name in chart.FIGURE_FILES.values()]
    assert result["figures"] == [str(path) for path in expected]
    for path in expected:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in folder.iterdir()) == sorted(chart.FIGURE_FILES.values())

    # The report shows the decision, the metrics table and every figure, by relative link.
    page = Path(result["report"])
    assert page == art["settings"].paths.report(day) / "index.html"
    html = page.read_text()
    metrics = json.loads((art["settings"].paths.output(day) / "metrics.json").read_text())
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
    (art["settings"].paths.processed(day) / "feature_counts.json").unlink()
    with pytest.raises(io.MissingArtifactError, match="'featurize' task"):
        chart.run(day.isoformat(), root=root, params_file=params)


def test_calibration_table_bins_by_prediction_and_keeps_means() -> None:
    predicted = np.arange(20, dtype=float)
    actual = predicted * 2
    table = chart.calibration_table(actual, predicted, bins=4)
    assert list(table["n"]) == [5, 5, 5, 5]
    np.testing.assert_allclose(table["predicted"], [2, 7, 12, 17])
    np.testing.assert_allclose(table["actual"], [4, 14, 24, 34])
    fig = chart.calibration(table)
    (ax,) = [a for a in fig.axes if a.get_title()]
    assert "(minutes)" in ax.get_xlabel() and "(minutes)" in ax.get_ylabel()
    assert ax.get_legend() is not None


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


def test_run_without_predictions_names_score_task(tmp_path, model_params_file) -> None:
    with pytest.raises(io.MissingArtifactError, match="'score' task"):
        chart.run("2024-03-10", root=tmp_path, params_file=model_params_file)
