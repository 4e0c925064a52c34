"""The run report: the ``report`` artifact, one self-contained page per processed
day with the metrics table, the promotion decision and its reason, the data window and
row counts, what featurize dropped or changed, and every figure. Pure: :func:`render`
turns dicts into HTML text; the chart task writes it (flight_delays.chart.run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

CONTENDER_NAMES = {
    "model": "Challenger (this run's model)",
    "champion": "Champion",
    "baseline": "Baseline (origin \N{MULTIPLICATION SIGN} hour median)",
}
METRICS = [
    ("mae", "MAE (minutes)", "{:.2f}"),
    ("rmse", "RMSE (minutes)", "{:.2f}"),
    ("median_ae", "Median absolute error (minutes)", "{:.2f}"),
    ("r2", "R\N{SUPERSCRIPT TWO}", "{:.3f}"),
    ("share_within", "Share within {within:g} min", "{:.1%}"),
]
# featurize's counts (the ``feature_counts`` artifact), in the order the page lists them
DATA_COUNTS = [
    ("days", "Days of raw partitions read"),
    ("quarantined_rows", "Rows quarantined by ingest's data contract (data/interim/quarantine)"),
    ("failed_contract", "Flights of older partitions that break the contract: left out"),
    ("flights_in", "Flights scheduled in the window"),
    ("duplicate_flights", "Duplicate flights dropped (first kept)"),
    ("excluded_no_arr_delay", "Flights without an arrival delay (cancelled, diverted): left out"),
    ("rows", "Flights in the feature table (training and holdout)"),
    ("missing_weather", "Flights without a weather report at their origin and hour"),
    ("weather_in", "Hourly weather reports in the window"),
    ("duplicate_weather", "Duplicate weather hours averaged (the repeated hour at DST)"),
    ("implausible_weather", "Weather readings out of physical range: made missing"),
]
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.promoted{color:#0a6b2d;font-weight:600}.kept{color:#8a5a00;font-weight:600}.stepped{color:#a3000b;font-weight:600}
figure{margin:1.5rem 0}img{max-width:100%;border:1px solid #eee}
"""


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "\N{EN DASH}"
    return escape(fmt.format(value))


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """An HTML table: one row per contender present in ``metrics``, one column per metric."""
    within = float(metrics.get("within_minutes", 15))
    head = "".join(f"<th>{escape(label.format(within=within))}</th>" for _, label, _ in METRICS)
    rows = []
    for key, name in CONTENDER_NAMES.items():
        if key not in metrics:
            continue
        values = metrics[key]
        cells = "".join(
            f'<td class="num">{_cell(values.get(metric), fmt)}</td>' for metric, _, fmt in METRICS
        )
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def counts_table(counts: Mapping[str, Any]) -> str:
    """An HTML table of featurize's counts: one row per entry of :data:`DATA_COUNTS`."""
    rows = "".join(
        f'<tr><th>{escape(label)}</th><td class="num">{_cell(counts.get(key), "{:,}")}</td></tr>'
        for key, label in DATA_COUNTS
    )
    return f"<table>{rows}</table>"


def drift_section(drift: Mapping[str, Any] | None) -> str:
    """The run's input drift (the ``drift`` entry of the metrics): the verdict, the
    thresholds and the watched features by PSI, largest first. PSI is unitless."""
    if not drift:
        return "<p>Input drift was not measured for this run.</p>"
    if drift.get("skipped"):
        return f"<p>Input drift not measured: {escape(str(drift['skipped']))}.</p>"
    flagged = drift.get("flagged") or []
    verdict = (
        f'<span class="stepped">flagged: {escape(", ".join(flagged))}</span>'
        if flagged
        else '<span class="promoted">no watched feature at or above the alert threshold</span>'
    )
    features = drift.get("features", {})
    watched = sorted(drift.get("watched", []), key=lambda f: -(features.get(f) or 0.0))
    rows = "".join(
        f"<tr><th>{escape(f)}</th><td>{escape(drift['kinds'].get(f, ''))}</td>"
        f'<td class="num">{_cell(features.get(f), "{:.3f}")}</td></tr>'
        for f in watched
    )
    return (
        f"<p>PSI (population stability index, unitless) of each feature, the processed "
        f"day's {drift.get('day_rows', 0):,} flights against the training window's "
        f"{drift.get('window_rows', 0):,}: {verdict}. Thresholds: warn "
        f"{drift['warn']:g}, alert {drift['alert']:g}.</p>"
        f"<table><tr><th>Watched feature</th><th>Kind</th><th>PSI</th></tr>{rows}</table>"
        "<p>The other features (weather, the day's counts, past-day delays) are measured "
        "and drawn in the chart below, not judged: a day holds one draw of them.</p>"
    )


def render(
    metrics: Mapping[str, Any],
    model_card: Mapping[str, Any],
    figures: Sequence[tuple[str, str]],
    data_counts: Mapping[str, Any],
) -> str:
    """The report page. ``metrics``: the score task's ``metrics``; ``model_card``:
    the train task's ``run_model_card``; ``figures``: (caption, path relative to the page);
    ``data_counts``: the featurize task's ``feature_counts``."""
    day = escape(str(metrics["day"]))
    decision = metrics.get("decision", {})
    promoted = bool(decision.get("promoted"))
    stepped_down = bool(decision.get("stepped_down"))
    if promoted:
        label, css_class = "promoted", "promoted"
    elif stepped_down:
        label, css_class = "the champion stepped down: the baseline is champion again", "stepped"
    else:
        label, css_class = "kept the champion", "kept"
    champion = metrics.get("champion_info", {})
    window = model_card.get("train_window", {})
    facts = [
        ("Processed day", day),
        ("Training days", f"{window.get('first_day', '?')} .. {window.get('last_day', '?')}"),
        ("Training rows", _count(model_card.get("train_rows")) + _left_out(model_card)),
        ("Holdout days", f"{metrics['holdout_start']} .. {metrics['holdout_end']}"),
        ("Holdout rows", f"{metrics['holdout_rows']:,}"),
        ("Champion compared", champion.get("name", "?")),
        ("Model file SHA-256", metrics.get("model_sha256", "?")),
    ]
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    figure_html = "".join(
        f'<figure><img src="{escape(src)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for caption, src in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>flight_delays {day}</title><style>{STYLE}</style></head>
<body>
<h1>flight_delays: run for {day}</h1>
<p>Decision: <span class="{css_class}">{escape(label)}</span>.
{escape(str(decision.get("reason", "")))}</p>
<h2>Holdout metrics</h2>
{metrics_table(metrics)}
<h2>Data</h2>
<table>{fact_rows}</table>
<h3>What featurize left out or changed</h3>
{counts_table(data_counts)}
<h2>Input drift</h2>
{drift_section(metrics.get("drift"))}
<h2>Charts</h2>
{figure_html}
</body></html>
"""


def _left_out(model_card: dict[str, Any]) -> str:
    """What train.max_rows left out of the training table, if anything."""
    left = model_card.get("train_rows_left_out") or {}
    if not left.get("rows"):
        return ""
    return (
        f" ({_count(left['rows'])} rows of the {_count(left.get('days'))} oldest days left "
        f"out: train.max_rows is {_count(left.get('max_rows'))})"
    )


def _count(value: Any) -> str:
    """A count with thousands separators; "?" when a card written by another version
    lacks it (the page is still drawn)."""
    return f"{value:,}" if isinstance(value, int) else "?"
