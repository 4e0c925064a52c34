"""Input drift: how far the processed day's features have moved from the training window,
one Population Stability Index (PSI) per feature.

PSI compares two distributions over the same buckets::

    PSI = sum over buckets of (day share - window share) * ln(day share / window share)

It is 0 for identical shares and grows with the shift; it is unitless. Buckets:

- numeric feature: the training window's deciles (``bins`` quantiles; repeated edges,
  e.g. the many zero precipitations, are merged, so a feature may have fewer buckets),
  right-closed, open at both ends, so a day's value outside the window's range still
  lands in the first or the last bucket;
- categorical feature: one bucket per category holding at least ``min_category_share``
  of the window's rows; rarer categories and categories the window never saw share one
  "other/unseen" bucket (a hundred destinations with a handful of flights each would
  otherwise make a normal day's sampling noise look like drift);
- both: missing values are a bucket of their own (a sensor that stops reporting is
  drift too).

A bucket that is empty on one side gets the share ``epsilon`` instead of 0 (the
logarithm would be infinite): one bucket the day leaves empty contributes at most about
``window share * ln(window share / epsilon)``.

Pure core: :func:`compute` (frames in, a tidy frame out; inputs never modified) and
:func:`summary` (that frame in, the ``drift`` entry of the ``metrics`` artifact out). No
clock, no files: the score step calls it with the ``train_table`` artifact (the window)
and the processed day's rows of the ``holdout_table`` artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from flight_delays.base import schema
from flight_delays.base.frames import require_columns
from flight_delays.store.config import DriftSettings

STATISTIC = "psi"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
OTHER = "(other/unseen)"
MISSING = "(missing)"
#: The tidy frame :func:`compute` returns, one row per feature, in the order of the
#: features asked for.
COLUMNS = ["feature", "kind", "psi", "threshold", "flagged", "day_rows", "window_rows"]
DEFAULTS = DriftSettings()


def psi(window_shares: Any, day_shares: Any, epsilon: float = 1e-4) -> float:
    """The PSI of two share vectors over the same buckets (each sums to 1; zeros are
    raised to ``epsilon``). Unitless, >= 0."""
    expected = np.maximum(np.asarray(window_shares, dtype=float), epsilon)
    actual = np.maximum(np.asarray(day_shares, dtype=float), epsilon)
    if expected.shape != actual.shape:
        raise ValueError(f"share vectors differ in length: {expected.shape} vs {actual.shape}")
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_edges(window: pd.Series, bins: int) -> np.ndarray:
    """The inner bucket edges of a numeric feature: the window's ``bins``-quantiles
    (the 1/bins ... (bins-1)/bins quantiles of its non-missing values), repeated values
    merged. Empty when the window has no value."""
    values = pd.to_numeric(window, errors="coerce").dropna().to_numpy(dtype=float)
    if len(values) == 0:
        return np.array([], dtype=float)
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def numeric_shares(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the buckets ``(-inf, e0], (e0, e1], ..., (e_last, inf)``
    and, last, the missing values' bucket."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = ~np.isnan(numbers)
    bucket = np.searchsorted(edges, numbers[present], side="left")
    counts = np.bincount(bucket, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, float((~present).sum()))
    return counts / max(len(numbers), 1)


def categorical_shares(
    window: pd.Series, day: pd.Series, min_share: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Shares of the window and of the day over the window's categories holding at least
    ``min_share`` of its rows, then :data:`OTHER` (rarer or unseen categories), then
    :data:`MISSING`. Returns (window shares, day shares, bucket names)."""
    window_text = window.astype("string")
    day_text = day.astype("string")
    frequent = window_text.value_counts(normalize=True, dropna=True)
    kept = sorted(frequent.index[frequent >= min_share])
    names = [*kept, OTHER, MISSING]

    def shares(text: pd.Series) -> np.ndarray:
        bucket = text.where(text.isin(kept), OTHER).where(text.notna(), MISSING)
        counts = bucket.value_counts().reindex(names, fill_value=0).to_numpy(dtype=float)
        return counts / max(len(text), 1)

    return shares(window_text), shares(day_text), names


def compute(
    window: pd.DataFrame,
    day: pd.DataFrame,
    parameters: DriftSettings = DEFAULTS,
    categorical: Sequence[str] = tuple(schema.CATEGORICAL_FEATURES),
    numeric: Sequence[str] = tuple(schema.NUMERIC_FEATURES),
) -> pd.DataFrame:
    """The PSI of each feature between the training ``window`` and the ``day``'s rows.

    ``window`` and ``day`` must hold every name in ``categorical`` and ``numeric`` (the
    feature table's columns, schema.FEATURES by default): a missing one raises
    :class:`flight_delays.base.frames.MissingColumnsError` naming it.

    Returns :data:`COLUMNS`: ``feature``, ``kind`` (numeric or categorical), ``psi``
    (NaN when the day or the window has fewer than ``parameters.min_rows`` rows: too few
    flights to tell drift from chance), ``threshold`` (the alert threshold for the
    features in ``parameters.watch``; NaN for the others, which are measured only),
    ``flagged`` (a watched feature's PSI at or above it; never for a skipped day),
    ``day_rows``, ``window_rows``. The inputs are never modified.
    """
    features = [(f, CATEGORICAL) for f in categorical] + [(f, NUMERIC) for f in numeric]
    names = [f for f, _kind in features]
    require_columns(window, names, "drift window (train_table)")
    require_columns(day, names, "drift day (the processed day's holdout rows)")
    skipped = min(len(day), len(window)) < parameters.min_rows
    rows = []
    for feature, kind in features:
        value = np.nan
        if not skipped:
            if kind == NUMERIC:
                edges = numeric_edges(window[feature], parameters.bins)
                expected = numeric_shares(window[feature], edges)
                actual = numeric_shares(day[feature], edges)
            else:
                expected, actual, _names = categorical_shares(
                    window[feature], day[feature], parameters.min_category_share
                )
            value = psi(expected, actual, parameters.epsilon)
        watched = feature in parameters.watch
        rows.append(
            {
                "feature": feature,
                "kind": kind,
                "psi": value,
                "threshold": parameters.alert if watched else np.nan,
                "flagged": bool(watched and not skipped and value >= parameters.alert),
                "day_rows": len(day),
                "window_rows": len(window),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def skip_reason(scores: pd.DataFrame, min_rows: int) -> str | None:
    """Why :func:`compute` measured nothing (too few flights), or None."""
    if scores.empty or scores["psi"].notna().any():
        return None
    day_rows, window_rows = int(scores["day_rows"].iloc[0]), int(scores["window_rows"].iloc[0])
    side, rows = ("day", day_rows) if day_rows < min_rows else ("training window", window_rows)
    return (
        f"too few flights to measure drift: the {side} has {rows} rows, fewer than "
        f"drift.min_rows = {min_rows}"
    )


def summary(scores: pd.DataFrame, parameters: DriftSettings) -> dict[str, Any]:
    """The ``drift`` entry of the ``metrics`` artifact, from :func:`compute`'s frame::

        {"statistic": "psi", "warn": w, "alert": a, "min_rows": n, "bins": b,
         "day_rows": n, "window_rows": m, "features": {name: psi or None},
         "kinds": {name: "numeric" | "categorical"}, "watched": [names],
         "warned": [watched names >= warn], "flagged": [watched names >= alert],
         "max": {"feature": name, "psi": x} or None, "skipped": None or the reason}

    ``max`` is the largest PSI of a watched feature; lists are sorted by PSI, largest
    first."""
    measured = scores.dropna(subset=["psi"]).sort_values("psi", ascending=False, kind="stable")
    measured = measured[measured["threshold"].notna()]  # the watched features
    top = None
    if len(measured):
        top = {
            "feature": measured["feature"].iloc[0],
            "psi": round(float(measured["psi"].iloc[0]), 6),
        }
    return {
        "statistic": STATISTIC,
        "warn": parameters.warn,
        "alert": parameters.alert,
        "min_rows": parameters.min_rows,
        "bins": parameters.bins,
        "day_rows": int(scores["day_rows"].iloc[0]) if len(scores) else 0,
        "window_rows": int(scores["window_rows"].iloc[0]) if len(scores) else 0,
        "features": {
            row.feature: None if pd.isna(row.psi) else round(float(row.psi), 6)
            for row in scores.itertuples()
        },
        "kinds": dict(zip(scores["feature"], scores["kind"], strict=True)),
        "watched": list(scores.loc[scores["threshold"].notna(), "feature"]),
        "warned": list(measured.loc[measured["psi"] >= parameters.warn, "feature"]),
        "flagged": list(measured.loc[measured["flagged"], "feature"]),
        "max": top,
        "skipped": skip_reason(scores, parameters.min_rows),
    }


def brief(drift: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the score task returns (XCom) of a ``drift`` entry: the flagged features,
    the largest PSI, the alert threshold and the skip reason."""
    if drift is None:
        return None
    return {
        "flagged": list(drift.get("flagged", [])),
        "max": drift.get("max"),
        "alert": drift.get("alert"),
        "skipped": drift.get("skipped"),
    }


def scores_of(drift: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`compute`'s frame again, from the ``drift`` entry :func:`summary` made of
    it (what the registry stores: the recorded metrics are the one source)."""
    watched, flagged = set(drift.get("watched", [])), set(drift.get("flagged", []))
    rows = [
        {
            "feature": feature,
            "kind": drift["kinds"][feature],
            "psi": np.nan if value is None else float(value),
            "threshold": drift["alert"] if feature in watched else np.nan,
            "flagged": feature in flagged,
            "day_rows": drift["day_rows"],
            "window_rows": drift["window_rows"],
        }
        for feature, value in drift["features"].items()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)
