"""Goodness-of-fit charts, every axis labelled with its unit.

One function per chart kind: each takes precomputed data and an optional Axes, draws on
it (or on a new Figure) and returns the Figure. Figures are built with
``matplotlib.figure.Figure`` and an Agg canvas, never pyplot, so no global state is
touched and charts can be drawn from parallel tasks or a notebook alike.
The step: :func:`chart_core` draws the day's figures and its run report from the score
task's artifacts; :data:`STEP` declares it for the runner, which writes the PNGs to
``reports/figures/ds=<day>/``.
"""

from __future__ import annotations

import logging
import posixpath
from datetime import date
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flight_delays.base import schema
from flight_delays.model import promotion, scoring, serving
from flight_delays.monitor import drift, report
from flight_delays.store import artifacts, io, registry, step_runner
from flight_delays.store.storage import ArtifactPath

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

# The figures' file names, by the chart's key (the catalog's figure entries).
FIGURE_FILES = {key: entry.filename for key, entry in artifacts.FIGURE_ENTRIES.items()}
FIGURE_CAPTIONS = {
    "predicted_vs_actual": "Predicted against actual arrival delay, holdout flights",
    "residuals": "Distribution of residuals (predicted minus actual)",
    "mae_by_hour": "MAE by scheduled departure hour: model and baseline",
    "calibration": (
        "Calibration: median actual delay (interquartile band) per decile of the predicted"
        " delay, and the share of flights 15+ minutes late"
    ),
    "metric_history": "Holdout MAE of challenger, champion and baseline over processed days",
    "drift": (
        "Input drift: PSI of each feature, the processed day's flights against the training"
        " window (unitless), with the warn and alert thresholds"
    ),
}
PSI_LABEL = "Population stability index, PSI (unitless; log scale)"
#: PSI values below this are drawn at it: the log axis has no zero.
PSI_FLOOR = 1e-3
PROCESSED_DAY_LABEL = "Processed day (flight day, local date)"
CALIBRATION_X_LABEL = "Median predicted arrival delay in the bin (minutes)"
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

    ``table`` is :func:`flight_delays.model.scoring.mae_by_group` output: indexed by hour, one
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


#: A flight is late, in the airlines' on-time statistics (BTS, "ArrDel15"), when it
#: arrives 15 minutes or more after its scheduled time.
LATE_MINUTES = 15.0
LATE_SHARE_LABEL = "Arrived 15+ min late (% of flights)"
CALIBRATION_COLUMNS = (
    "n",
    "predicted_median",
    "actual_q25",
    "actual_median",
    "actual_q75",
    "late_share",
)
#: The metric-history axis shows at least this many days, so a first run's single point
#: sits in a week of labelled days.
MIN_DAYS_SHOWN = 7


def calibration_table(
    actual: Any, predicted: Any, bins: int = 10, late_minutes: float = LATE_MINUTES
) -> pd.DataFrame:
    """What the calibration chart draws, per quantile bin of the prediction (deciles by
    default), smallest predictions first.

    ``actual`` and ``predicted``: arrival delays in minutes, one value per flight. The
    model minimises absolute error, so it predicts the median delay: each bin is summed
    up by medians and quartiles, not means. Columns: ``n`` (flights in the bin),
    ``predicted_median``, ``actual_q25``, ``actual_median``, ``actual_q75`` (minutes;
    quartiles interpolated linearly, as numpy does) and ``late_share`` (the fraction 0-1
    of the bin's flights that arrived ``late_minutes`` or more late). Bins hold equal
    counts (ties in the prediction split by order); with fewer flights than ``bins``, one
    bin per flight.
    """
    true = _values(actual, "actual")
    pred = _values(predicted, "predicted")
    if len(true) != len(pred):
        raise ValueError(f"actual has {len(true)} values but predicted has {len(pred)}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    # Rank first so equal predictions (common: a median model predicts round numbers)
    # cannot merge two quantile edges into one.
    ranks = pd.Series(pred).rank(method="first")
    groups = pd.qcut(ranks, q=min(bins, len(pred)), labels=False)
    frame = pd.DataFrame(
        {"bin": groups, "predicted": pred, "actual": true, "late": true >= late_minutes}
    )
    by_bin = frame.groupby("bin")
    table = pd.DataFrame(
        {
            "n": by_bin["actual"].size(),
            "predicted_median": by_bin["predicted"].median(),
            "actual_q25": by_bin["actual"].quantile(0.25),
            "actual_median": by_bin["actual"].median(),
            "actual_q75": by_bin["actual"].quantile(0.75),
            "late_share": by_bin["late"].mean(),
        }
    )
    return table.reset_index(drop=True)


def calibration(
    table: pd.DataFrame, ax: Axes | None = None, share_ax: Axes | None = None
) -> Figure:
    """Calibration of a median model, drawn from :func:`calibration_table`.

    ``ax``: per bin of the prediction, the median actual arrival delay against the bin's
    median predicted delay (minutes), the actual delay's interquartile range shaded, and
    the y = x line. A well-fitted median model keeps the medians on the line; the band
    shows how far single flights stray from it. ``share_ax``: the share of the bin's
    flights that arrived 15+ minutes late, in % of flights, against the same x.

    With no Axes, a new Figure with the two panels stacked. With ``ax`` alone, the share
    goes on a twin y axis of ``ax``.
    """
    missing = sorted(set(CALIBRATION_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"calibration needs column(s): {', '.join(missing)}")
    if table.empty:
        raise ValueError("calibration needs a non-empty table")
    pred = _values(table["predicted_median"], "predicted_median")
    q25 = _values(table["actual_q25"], "actual_q25")
    median = _values(table["actual_median"], "actual_median")
    q75 = _values(table["actual_q75"], "actual_q75")
    share = 100.0 * _values(table["late_share"], "late_share")
    counts = _values(table["n"], "n")
    stacked = ax is None
    twin = ax is not None and share_ax is None
    if ax is None:
        fig = Figure(figsize=(6.4, 6.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax, share_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    else:
        fig, ax = _axes(ax)
        if share_ax is None:
            share_ax = ax.twinx()
    x_pad = max(1.0, 0.05 * float(pred.max() - pred.min()))
    x_low, x_high = float(pred.min()) - x_pad, float(pred.max()) + x_pad
    ax.fill_between(
        pred, q25, q75, color="tab:blue", alpha=0.2, label="Actual: 25th\N{EN DASH}75th percentile"
    )
    ax.plot(pred, median, marker="o", color="tab:blue", label="Actual: median")
    ax.plot(
        [x_low, x_high],
        [x_low, x_high],
        color="tab:red",
        linewidth=1.0,
        linestyle="--",
        label="Perfect calibration (y = x)",
    )
    y_low = min(float(q25.min()), x_low)
    y_high = max(float(q75.max()), x_high)
    y_pad = 0.05 * (y_high - y_low)
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low - y_pad, y_high + y_pad)
    ax.set_xlabel(CALIBRATION_X_LABEL)
    ax.set_ylabel(ACTUAL_LABEL)
    ax.set_title(
        f"Calibration: {len(table)} equal bins of the prediction, {int(counts.sum()):,} flights"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")

    overall = float(np.average(share, weights=counts))
    share_ax.plot(pred, share, marker="s", color="tab:purple", label="Per bin")
    share_ax.axhline(
        overall, color="grey", linewidth=1.0, linestyle=":", label=f"All flights: {overall:.0f}%"
    )
    share_ax.set_ylim(-5, 105)  # room for a marker at 0 % or 100 %
    share_ax.set_yticks([0, 25, 50, 75, 100])
    share_ax.set_ylabel(LATE_SHARE_LABEL)
    share_ax.set_xlim(x_low, x_high)
    share_ax.set_xlabel(CALIBRATION_X_LABEL)
    if twin:
        # Same Axes area: the share's legend goes where the delay legend is not.
        share_ax.legend(loc="lower right", fontsize="small", title="15+ min late")
    else:
        share_ax.grid(alpha=0.3)
        share_ax.legend(loc="upper left", fontsize="small")
    if stacked:
        ax.tick_params(labelbottom=False)
        ax.set_xlabel("")  # one x label, under the bottom panel, which shares the axis
    return fig


def _date_axis(ax: Axes, days: pd.Series) -> None:
    """A readable date axis for ``days`` (sorted timestamps at midnight).

    At least MIN_DAYS_SHOWN days wide and a day of margin on each side, so a single point
    sits inside a labelled week rather than on a five-year axis. Up to two months: a tick
    at midnight every day, or every few days for at most about eight labels, each with
    its weekday (flight delays follow the week). Longer: matplotlib's ticks, concise
    labels.
    """
    first, last = days.iloc[0], days.iloc[-1]
    span = (last - first).days
    pad = max(1, -(-(MIN_DAYS_SHOWN - 1 - span) // 2), round(0.02 * span))
    ax.set_xlim(first - pd.Timedelta(days=pad), last + pd.Timedelta(days=pad))
    width = span + 2 * pad
    if width <= 62:
        step = max(1, -(-width // 8))
        ax.xaxis.set_major_locator(mdates.DayLocator(interval=step))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a\n%d %b\n%Y"))
    else:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def metric_history(
    history: pd.DataFrame, ax: Axes | None = None, title: str = "Holdout MAE"
) -> Figure:
    """Holdout MAE (minutes) of the challenger, the champion and the baseline for each
    processed day, promotions circled, step-downs of a decayed champion crossed; and,
    where the history has a ``served_mae`` column (:func:`flight_delays.model.serving.
    with_served`), the MAE of the predictions served for each day.

    ``history``: one row per run with ``processed_day``, ``challenger_mae``,
    ``champion_mae``, ``baseline_mae`` and ``decision`` (``promoted``, ``kept`` or
    ``stepped down``, :data:`flight_delays.model.promotion.LABELS`), e.g.
    :func:`flight_delays.store.registry.history` (nightly runs) or
    :func:`flight_delays.backtest.history_frame` (replayed runs). Reruns of a day: the
    last one is drawn. The title is ``title`` followed by the number of days. The y axis
    runs from 0 to above the highest value, and the legend sits outside the plot, so no
    marker is cut off or hidden.
    """
    needed = {"processed_day", "challenger_mae", "champion_mae", "baseline_mae", "decision"}
    missing = sorted(needed - set(history.columns))
    if missing:
        raise ValueError(f"metric_history needs column(s): {', '.join(missing)}")
    if history.empty:
        raise ValueError("metric_history needs at least one run")
    runs = history.assign(processed_day=pd.to_datetime(history["processed_day"]).dt.normalize())
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
    crowded = len(runs) > 60  # a backtest's year: smaller markers keep the lines legible
    highest = 0.0
    lowest = np.inf
    for col, (label, color, marker) in styles.items():
        values = _values(runs[col], col)
        highest, lowest = max(highest, float(values.max())), min(lowest, float(values.min()))
        ax.plot(
            days, values, marker=marker, markersize=2.5 if crowded else 5, color=color, label=label
        )
    # What production delivered: the predictions served for the day (flight_delays_
    # predict) against its actual delays; only days that were served have a point.
    served = runs.get("served_mae", pd.Series(np.nan, index=runs.index)).astype(float)
    if served.notna().any():
        shown = served.notna().to_numpy()
        values = served.to_numpy()[shown]
        highest, lowest = max(highest, float(values.max())), min(lowest, float(values.min()))
        ax.plot(
            days[shown],
            values,
            linestyle="--",
            marker="D",
            markersize=2.5 if crowded else 5,
            color="tab:purple",
            label="Served (the day's predictions vs its actual delays)",
        )
    # The decisions that moved the champion, each at the MAE it was decided on: circled
    # promotions (always in the legend), crossed step-downs (only when there is one).
    moves = {
        promotion.PROMOTED: ("challenger_mae", "Promoted", True,
                             {"facecolors": "none", "edgecolors": "black"}),
        promotion.STEPPED_DOWN: ("champion_mae", "Champion stepped down", False,
                                 {"marker": "x", "color": "tab:red"}),
    }  # fmt: skip
    for decision, (column, label, always, style) in moves.items():
        chosen = runs[runs["decision"] == decision]
        if always or len(chosen):
            ax.scatter(
                chosen["processed_day"].to_numpy(),
                chosen[column].to_numpy(),
                s=40 if crowded else 140,
                linewidths=1.5,
                zorder=3,
                label=f"{label} ({len(chosen)})",
                **style,
            )
    _date_axis(ax, runs["processed_day"])
    # MAE from 0 (an honest scale) to 15 % above the top marker; below 0 only if a value
    # sits so close to 0 that its marker would be cut.
    top = 1.15 * highest if highest > 0 else 1.0
    ax.set_ylim(min(0.0, lowest - 0.05 * top), top)
    ax.set_xlabel(PROCESSED_DAY_LABEL)
    ax.set_ylabel(MAE_LABEL)
    ax.set_title(f"{title} over {len(runs)} processed day{'s' if len(runs) != 1 else ''}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def drift_psi(
    scores: pd.DataFrame,
    warn: float,
    alert: float,
    ax: Axes | None = None,
    skipped: str | None = None,
) -> Figure:
    """One horizontal bar per feature: its PSI (unitless) between the processed day and
    the training window, on a log axis, with the ``warn`` and ``alert`` thresholds drawn.

    ``scores``: :func:`flight_delays.monitor.drift.compute`'s frame (or
    :func:`flight_delays.monitor.drift.scores_of` of the metrics' ``drift``): ``feature``, ``psi``
    and ``threshold`` (NaN: a feature measured only, not judged). Watched features come
    first, coloured by level (below warn, warn, alert); the measured-only ones follow in
    grey. A day that was not measured (every PSI missing) draws the axes and
    ``skipped``, its reason, instead of bars.
    """
    missing = sorted({"feature", "psi", "threshold"} - set(scores.columns))
    if missing:
        raise ValueError(f"drift_psi needs column(s): {', '.join(missing)}")
    if scores.empty:
        raise ValueError("drift_psi needs at least one feature")
    watched = scores["threshold"].notna()
    ordered = pd.concat(  # top to bottom: watched, then measured only; largest first
        [
            scores[watched].sort_values("psi", ascending=False, kind="stable"),
            scores[~watched].sort_values("psi", ascending=False, kind="stable"),
        ]
    )
    fig, ax = _axes(ax, (8.0, max(4.0, 0.24 * len(ordered) + 1.5)))
    values = ordered["psi"].to_numpy(dtype=float)
    is_watched = ordered["threshold"].notna().to_numpy()
    colors = np.where(
        ~is_watched,
        "lightgrey",
        np.where(values >= alert, "tab:red", np.where(values >= warn, "tab:orange", "tab:green")),
    )
    positions = np.arange(len(ordered))[::-1]
    measured = ~np.isnan(values)
    ax.barh(
        positions[measured],
        np.maximum(values[measured], PSI_FLOOR) - PSI_FLOOR / 2,  # ends at the PSI
        left=PSI_FLOOR / 2,
        color=colors[measured],
        edgecolor="black",
        linewidth=0.3,
    )
    ax.set_yticks(
        positions,
        [f"{f}{'' if w else ' *'}" for f, w in zip(ordered["feature"], is_watched, strict=True)],
    )
    ax.set_xscale("log")
    top = float(np.nanmax(values)) if measured.any() else alert
    ax.set_xlim(PSI_FLOOR / 2, max(top, alert) * 2)
    ax.set_ylim(-0.7, len(ordered) - 0.3)
    ax.axvline(warn, color="tab:orange", linestyle="--", linewidth=1.2, label=f"Warn: PSI {warn:g}")
    ax.axvline(alert, color="tab:red", linestyle="--", linewidth=1.2, label=f"Alert: PSI {alert:g}")
    if not measured.any():
        ax.text(
            0.5,
            0.5,
            f"Not measured: {skipped or 'no PSI'}",
            transform=ax.transAxes,
            ha="center",
            va="center",
            wrap=True,
            bbox={"facecolor": "white", "edgecolor": "grey"},
        )
    ax.set_xlabel(PSI_LABEL)
    ax.set_ylabel("Feature (* measured only, not judged: a day is one draw of it)")
    flagged = int(((values >= alert) & is_watched).sum())
    ax.set_title(
        f"Input drift: {flagged} watched feature{'s' if flagged != 1 else ''} at or above "
        f"the alert threshold"
    )
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return fig


def save_png(fig: Figure, path: str | ArtifactPath) -> ArtifactPath:
    """Write ``fig`` as a PNG at ``path`` (local or a URL), atomically."""
    return io.write_bytes(png(fig), path)


def png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (what :func:`save_png` writes)."""
    out = BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _history(run: step_runner.StepRun, _inputs: dict[str, Any]) -> dict[str, Any]:
    """The registry's runs with their served scores, as of the processed day (runs
    recorded after it are left out, so a backfill draws each day's history as of that day)."""
    engine = run.registry()
    runs = serving.with_served(registry.history(engine), serving.served_scores(engine))
    return {"runs": runs[pd.to_datetime(runs["processed_day"]) <= pd.Timestamp(run.day)]}


def chart_core(
    day: date,
    _params: None,
    predictions: pd.DataFrame,
    metrics: dict[str, Any],
    card: dict[str, Any],
    counts: dict[str, Any],
    runs: pd.DataFrame,
) -> step_runner.Result:
    """The step's core: the day's figures (PNG bytes, by catalog name) and the run report
    that links them."""
    actual = predictions["actual"].to_numpy(dtype=float)
    predicted = predictions["predicted"].to_numpy(dtype=float)
    table = scoring.mae_by_group(
        predictions, schema.SCHED_HOUR, "actual", ["predicted", "baseline"]
    )
    figures = {
        "predicted_vs_actual": predicted_vs_actual(actual, predicted),
        "residuals": residual_distribution(predicted - actual),
        "mae_by_hour": mae_by_hour(table),
        "calibration": calibration(calibration_table(actual, predicted)),
    }
    if not runs.empty:
        figures["metric_history"] = metric_history(runs)
    if metrics.get("drift"):  # None in metrics written before drift was measured
        entry = metrics["drift"]
        figures["drift"] = drift_psi(
            drift.scores_of(entry), entry["warn"], entry["alert"], skipped=entry["skipped"]
        )
    page_folder = posixpath.dirname(artifacts.REPORT.relative(day))
    # The page links its figures relative to its own folder (the catalog's relative
    # names: the same under a local or an object-store root).
    links = [
        (
            FIGURE_CAPTIONS[name],
            posixpath.relpath(artifacts.FIGURE_ENTRIES[name].relative(day), page_folder),
        )
        for name in figures
    ]
    return step_runner.Result(
        outputs={
            "figures": {name: png(fig) for name, fig in figures.items()},
            "report": report.render(metrics, card, links, counts),
        },
        summary={},
        line=f"{len(predictions)} holdout flights in, {len(figures)} figures out; challenger "
        f"holdout MAE {metrics['model']['mae']:.2f} min (baseline "
        f"{metrics['baseline']['mae']:.2f})",
    )


#: Reads the catalog's predictions, metrics and day_model_card (score task),
#: feature_counts (featurize task) and the registry's history; writes the figures into
#: ``reports/figures/ds=<day>/`` and the ``report`` page. The XCom dict: ``{"figures":
#: [locations], "report": location}``.
STEP = step_runner.Step(
    name="chart",
    core=chart_core,
    reads={
        "predictions": artifacts.PREDICTIONS,
        "metrics": artifacts.METRICS,
        "card": artifacts.DAY_MODEL_CARD,
        "counts": artifacts.FEATURE_COUNTS,
    },
    load=_history,
    writes={"figures": artifacts.FIGURE_ENTRIES, "report": artifacts.REPORT},
)
run = STEP.run
