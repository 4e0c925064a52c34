"""Goodness-of-fit charts, every axis labelled with its unit.

One function per chart kind: each takes precomputed data and an optional Axes, draws on
it (or on a new Figure) and returns the Figure. Figures are built with
``matplotlib.figure.Figure`` and an Agg canvas, never pyplot, so no global state is
touched and charts can be drawn from parallel tasks or a notebook alike.
File wrapper: :func:`run` reads predictions.parquet from the score task and writes PNGs
to ``reports/figures/ds=<day>/``.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flight_delays import featurize, io, registry, report, schema, scoring
from flight_delays.config import load_settings
from flight_delays.dates import parse_day

log = logging.getLogger(__name__)

ACTUAL_LABEL = "Actual arrival delay (minutes)"
PREDICTED_LABEL = "Predicted arrival delay (minutes)"
RESIDUAL_LABEL = "Residual: predicted \N{MINUS SIGN} actual (minutes)"
HOUR_LABEL = "Scheduled departure hour (local time)"
MAE_LABEL = "Mean absolute error (minutes)"
SERIES_LABELS = {
    "predicted": "Model",
    "baseline": "Baseline (origin \N{MULTIPLICATION SIGN} hour median)",
}

FIGURE_FILES = {
    "predicted_vs_actual": "predicted_vs_actual.png",
    "residuals": "residuals.png",
    "mae_by_hour": "mae_by_hour.png",
    "calibration": "calibration.png",
    "metric_history": "metric_history.png",
}
FIGURE_CAPTIONS = {
    "predicted_vs_actual": "Predicted against actual arrival delay, holdout flights",
    "residuals": "Distribution of residuals (predicted minus actual)",
    "mae_by_hour": "MAE by scheduled departure hour: model and baseline",
    "calibration": "Calibration: mean actual delay per decile of predicted delay",
    "metric_history": "Holdout MAE of challenger, champion and baseline over processed days",
}
PROCESSED_DAY_LABEL = "Processed day (flight day, local date)"
DPI = 120


def _axes(ax: Axes | None, size: tuple[float, float] = (6.4, 4.8)) -> tuple[Figure, Axes]:
    if ax is not None:
        try:
            return ax.get_figure(root=True), ax  # matplotlib >= 3.10: the top-level Figure
        except TypeError:
            return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: PNG output, no pyplot
    return fig, fig.add_subplot()


def _values(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if len(array) == 0:
        raise ValueError(f"{name} is empty: nothing to plot")
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s)")
    return array


def predicted_vs_actual(actual: Any, predicted: Any, ax: Axes | None = None) -> Figure:
    """Hexbin of predicted against actual arrival delay (minutes, one value per flight),
    with the y = x line of perfect prediction. Colour: flights per cell (log scale)."""
    true = _values(actual, "actual")
    pred = _values(predicted, "predicted")
    if len(true) != len(pred):
        raise ValueError(f"actual has {len(true)} values but predicted has {len(pred)}")
    fig, ax = _axes(ax, (6.4, 5.6))
    low = float(min(true.min(), pred.min()))
    high = float(max(true.max(), pred.max()))
    if high == low:
        low, high = low - 1.0, high + 1.0
    cells = ax.hexbin(
        true,
        pred,
        gridsize=40,
        bins="log",
        mincnt=1,
        cmap="viridis",
        extent=(low, high, low, high),
        label="Flights (hexagonal bins)",
    )
    fig.colorbar(cells, ax=ax, label="Flights per cell")
    ax.plot(
        [low, high], [low, high], color="tab:red", linewidth=1.2, label="Perfect prediction (y = x)"
    )
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(ACTUAL_LABEL)
    ax.set_ylabel(PREDICTED_LABEL)
    ax.set_title(f"Predicted vs actual arrival delay ({len(true):,} flights)")
    ax.legend(loc="upper left")
    return fig


def residual_distribution(residuals: Any, ax: Axes | None = None) -> Figure:
    """Histogram of residuals (predicted minus actual arrival delay, minutes) with the
    median marked. The x range covers the central 99% so the long tail of very late
    flights does not squash the bulk; the title says how many fall outside it."""
    values = _values(residuals, "residuals")
    fig, ax = _axes(ax)
    low, high = (float(q) for q in np.quantile(values, [0.005, 0.995]))
    if high == low:
        low, high = low - 1.0, high + 1.0
    outside = int(((values < low) | (values > high)).sum())
    ax.hist(values, bins=60, range=(low, high), color="tab:blue", alpha=0.8, label="Flights")
    median = float(np.median(values))
    ax.axvline(median, color="tab:red", linewidth=1.5, label=f"Median {median:+.1f} min")
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--", label="Zero error")
    ax.set_xlabel(RESIDUAL_LABEL)
    ax.set_ylabel("Flights")
    ax.set_title(f"Residual distribution ({outside:,} of {len(values):,} flights outside range)")
    ax.legend()
    return fig


def mae_by_hour(table: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Mean absolute error (minutes) per scheduled departure hour, one line per column.

    ``table`` is :func:`flight_delays.scoring.mae_by_group` output: indexed by hour, one
    MAE column per predictor (``predicted`` is labelled Model, ``baseline`` Baseline;
    other names as is) and an optional ``n`` column (flights), which is not drawn.
    """
    series = [col for col in table.columns if col != "n"]
    if table.empty or not series:
        raise ValueError("mae_by_hour needs a non-empty table with at least one MAE column")
    fig, ax = _axes(ax, (8.0, 4.8))
    hours = np.asarray(table.index, dtype=float)
    for col in series:
        ax.plot(
            hours, table[col].to_numpy(dtype=float), marker="o", label=SERIES_LABELS.get(col, col)
        )
    ax.set_xticks(np.arange(0, 24, 2))
    ax.set_xlim(-0.5, 23.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(HOUR_LABEL)
    ax.set_ylabel(MAE_LABEL)
    ax.set_title("Mean absolute error by scheduled departure hour")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _mae_over_days(ax: Axes, day_label: str) -> None:
    """Axes of an MAE-per-day chart: dates on x (concise labels), MAE from 0 on y."""
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylim(bottom=0)
    ax.set_xlabel(day_label)
    ax.set_ylabel(MAE_LABEL)


def calibration_table(actual: Any, predicted: Any, bins: int = 10) -> pd.DataFrame:
    """Mean predicted and mean actual arrival delay (minutes) per quantile bin of the
    prediction (deciles by default), with the number of flights in each bin."""
    true = _values(actual, "actual")
    pred = _values(predicted, "predicted")
    if len(true) != len(pred):
        raise ValueError(f"actual has {len(true)} values but predicted has {len(pred)}")
    ranks = pd.Series(pred).rank(method="first")
    groups = pd.qcut(ranks, q=min(bins, len(pred)), labels=False)
    frame = pd.DataFrame({"bin": groups, "predicted": pred, "actual": true})
    table = frame.groupby("bin").agg(
        predicted=("predicted", "mean"), actual=("actual", "mean"), n=("actual", "size")
    )
    return table.reset_index(drop=True)


def calibration(table: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Calibration: mean actual against mean predicted arrival delay (minutes) per bin of
    the prediction (:func:`calibration_table`), with the y = x line. Points above the line:
    flights in that bin arrived later than predicted on average."""
    if table.empty or not {"predicted", "actual"} <= set(table.columns):
        raise ValueError("calibration needs a non-empty table with predicted and actual columns")
    pred = _values(table["predicted"], "predicted")
    true = _values(table["actual"], "actual")
    fig, ax = _axes(ax)
    low = float(min(pred.min(), true.min()))
    high = float(max(pred.max(), true.max()))
    pad = max(1.0, 0.05 * (high - low))
    ax.plot(
        [low - pad, high + pad],
        [low - pad, high + pad],
        color="tab:red",
        linewidth=1.0,
        label="Perfect calibration (y = x)",
    )
    ax.plot(
        pred, true, marker="o", color="tab:blue", label=f"Flights, {len(table)} bins of equal size"
    )
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("Mean predicted arrival delay in the bin (minutes)")
    ax.set_ylabel("Mean actual arrival delay in the bin (minutes)")
    ax.set_title("Calibration by decile of the predicted delay")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def metric_history(
    history: pd.DataFrame, ax: Axes | None = None, title: str = "Holdout MAE"
) -> Figure:
    """Holdout MAE (minutes) of the challenger, the champion and the baseline for each
    processed day, promotions marked.

    ``history``: one row per run with ``processed_day``, ``challenger_mae``,
    ``champion_mae``, ``baseline_mae`` and ``decision`` (``promoted`` or ``kept``), e.g.
    :func:`flight_delays.registry.history` (nightly runs) or
    :func:`flight_delays.backtest.history_frame` (replayed runs). Reruns of a day: the
    last one is drawn. The title is ``title`` followed by the number of days.
    """
    needed = {"processed_day", "challenger_mae", "champion_mae", "baseline_mae", "decision"}
    missing = sorted(needed - set(history.columns))
    if missing:
        raise ValueError(f"metric_history needs column(s): {', '.join(missing)}")
    if history.empty:
        raise ValueError("metric_history needs at least one run")
    runs = history.assign(processed_day=pd.to_datetime(history["processed_day"]))
    runs = runs.drop_duplicates("processed_day", keep="last").sort_values("processed_day")
    fig, ax = _axes(ax, (9.0, 4.8))
    days = runs["processed_day"].to_numpy()
    styles = {
        "challenger_mae": ("Challenger (the run's model)", "tab:blue", "o"),
        "champion_mae": ("Champion at the time", "tab:green", "s"),
        "baseline_mae": (
            "Baseline (origin \N{MULTIPLICATION SIGN} hour median)",
            "tab:orange",
            "^",
        ),
    }
    for col, (label, color, marker) in styles.items():
        ax.plot(
            days, _values(runs[col], col), marker=marker, markersize=4, color=color, label=label
        )
    promoted = runs[runs["decision"] == "promoted"]
    ax.scatter(
        promoted["processed_day"].to_numpy(),
        promoted["challenger_mae"].to_numpy(),
        s=140,
        facecolors="none",
        edgecolors="black",
        linewidths=1.5,
        zorder=3,
        label=f"Promoted ({len(promoted)})",
    )
    _mae_over_days(ax, PROCESSED_DAY_LABEL)
    ax.set_title(f"{title} over {len(runs)} processed days")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically."""
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def run(
    day: str | date,
    root: str | Path | None = None,
    params_file: str | Path | None = None,
    registry_url: str | None = None,
) -> dict[str, Any]:
    """Draw the charts of ``day`` into ``reports/figures/ds=<day>/`` and write the run
    report ``reports/ds=<day>/index.html``.

    Reads predictions.parquet and metrics.json (score task), model_card.json (train task),
    feature_counts.json (featurize task) and the registry's history (default: the
    settings' registry; runs recorded after ``day`` are left out, so a backfill draws
    each day's history as of that day).
    Returns ``{"figures": [str paths], "report": str path}``.
    """
    day = parse_day(day)
    settings = load_settings(root, params_file)
    output = settings.paths.output(day)
    predictions = io.read_parquet(output / "predictions.parquet", task="score")
    metrics = io.read_json(output / "metrics.json", task="score")
    card = io.read_json(settings.paths.model_dir(day) / "model_card.json", task="train")
    counts = io.read_json(settings.paths.processed(day) / featurize.COUNTS_FILE, task="featurize")
    actual = predictions["actual"].to_numpy(dtype=float)
    predicted = predictions["predicted"].to_numpy(dtype=float)
    table = scoring.mae_by_group(
        predictions, schema.SCHED_HOUR, "actual", ["predicted", "baseline"]
    )
    engine = registry.connect(registry_url or settings.registry_url)
    try:
        runs = registry.history(engine)
    finally:
        engine.dispose()
    runs = runs[pd.to_datetime(runs["processed_day"]) <= pd.Timestamp(day)]
    figures = {
        "predicted_vs_actual": predicted_vs_actual(actual, predicted),
        "residuals": residual_distribution(predicted - actual),
        "mae_by_hour": mae_by_hour(table),
        "calibration": calibration(calibration_table(actual, predicted)),
    }
    if not runs.empty:
        figures["metric_history"] = metric_history(runs)
    out_dir = settings.paths.figures(day)
    paths = [str(save_png(fig, out_dir / FIGURE_FILES[name])) for name, fig in figures.items()]
    page = settings.paths.report(day) / "index.html"
    relative = Path("..") / out_dir.relative_to(settings.paths.root / "reports")
    html = report.render(
        metrics,
        card,
        [
            (FIGURE_CAPTIONS[name], f"{relative.as_posix()}/{FIGURE_FILES[name]}")
            for name in figures
        ],
        counts,
    )
    io.atomic_write(page, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    log.info(
        "chart %s: %d flights -> %d figures in %s, report %s",
        day,
        len(predictions),
        len(paths),
        out_dir,
        page,
    )
    return {"figures": paths, "report": str(page)}
