"""The one scoring module every comparison uses: pipeline runs, notebooks and tests.

Everything here is in minutes of arrival delay (``schema.TARGET``). Comparing two models
means calling :func:`regression_metrics` on both with the same actuals, so the numbers in
the metrics artifact, a notebook and a test mean the same thing.

The naive baseline lives here too, because it is part of every comparison: a challenger
that does not beat "the median delay of this airport at this hour" has learned nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from flight_delays.base import schema

#: Key under which :func:`regression_metrics` reports the share of predictions within
#: ``within_minutes`` of the actual delay. The key is fixed (not ``within_15``) so code
#: reading the metrics artifact does not depend on a parameter; the threshold is recorded beside
#: it as ``within_minutes``.
SHARE_WITHIN = "share_within"

METRIC_KEYS = ("mae", "rmse", "median_ae", "r2", SHARE_WITHIN, "within_minutes", "n")


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """A 1-D float array from a list, ndarray or Series (pandas NA becomes NaN)."""
    if isinstance(values, pd.Series | pd.Index):
        array = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _checked_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = _as_float_array(y_true, "y_true")
    pred = _as_float_array(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(
            f"y_true and y_pred differ in length: {len(true)} actual vs {len(pred)} predicted"
        )
    if len(true) == 0:
        raise ValueError("cannot score an empty set of predictions")
    bad_true = int((~np.isfinite(true)).sum())
    bad_pred = int((~np.isfinite(pred)).sum())
    if bad_true or bad_pred:
        raise ValueError(
            f"non-finite values (NaN or inf): {bad_true} in y_true and {bad_pred} in y_pred "
            f"out of {len(true)}; drop or fix them before scoring"
        )
    return true, pred


def regression_metrics(y_true: Any, y_pred: Any, within_minutes: float = 15.0) -> dict[str, float]:
    """Goodness of fit of arrival-delay predictions, all errors in minutes.

    Keys: ``mae``, ``rmse``, ``median_ae`` (minutes); ``r2`` (unitless; NaN with fewer
    than two values); ``share_within`` (fraction 0-1 of predictions whose absolute error
    is at most ``within_minutes``); ``within_minutes`` (the threshold used); ``n``
    (number of flights scored, an int).

    Raises ValueError when the inputs differ in length, are empty, or hold non-finite
    values (the message gives the count of bad values in each).
    """
    if not np.isfinite(within_minutes) or within_minutes < 0:
        raise ValueError(f"within_minutes must be a finite number >= 0, got {within_minutes!r}")
    true, pred = _checked_pair(y_true, y_pred)
    abs_err = np.abs(pred - true)
    # R² of a single value is undefined (sklearn warns and returns NaN): say so quietly.
    r2 = float(skm.r2_score(true, pred)) if len(true) >= 2 else float("nan")
    return {
        "mae": float(skm.mean_absolute_error(true, pred)),
        "rmse": float(skm.root_mean_squared_error(true, pred)),
        "median_ae": float(skm.median_absolute_error(true, pred)),
        "r2": r2,
        SHARE_WITHIN: float(np.mean(abs_err <= within_minutes)),
        "within_minutes": float(within_minutes),
        "n": len(true),
    }


def mae_by_group(
    frame: pd.DataFrame, group_col: str, actual_col: str, pred_cols: Sequence[str]
) -> pd.DataFrame:
    """Mean absolute error (minutes) of each prediction column within each group.

    ``frame`` needs ``group_col``, ``actual_col`` and every name in ``pred_cols``. Returns
    one row per group value (sorted, index named ``group_col``), one MAE column per
    prediction column (same names) and ``n``, the number of rows in the group. Rows with
    a missing group value are left out, as they belong to no group.
    """
    pred_cols = list(pred_cols)
    if not pred_cols:
        raise ValueError("pred_cols must name at least one prediction column")
    needed = [group_col, actual_col, *pred_cols]
    missing = [col for col in needed if col not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing column(s): {', '.join(missing)}")
    for col in pred_cols:
        _checked_pair(frame[actual_col], frame[col])  # same finiteness rules as the totals
    errors = pd.DataFrame(
        {
            col: (frame[col].astype(float) - frame[actual_col].astype(float)).abs()
            for col in pred_cols
        }
    )
    errors[group_col] = frame[group_col].to_numpy()
    grouped = errors.groupby(group_col, sort=True, dropna=True)
    table = grouped[pred_cols].mean()
    table["n"] = grouped.size()
    return table


class OriginHourMedianBaseline:
    """Naive baseline: the median arrival delay (minutes) by origin airport and scheduled
    departure hour, learned on the training frame.

    A (origin, hour) pair not seen in training falls back to that origin's median, and an
    unseen or missing origin to the global median. :meth:`fallbacks` counts how many rows
    of a frame take each path.
    """

    ORIGIN = "origin"
    HOUR = schema.SCHED_HOUR
    LEVELS = ("origin_hour", "origin", "global")

    def __init__(self) -> None:
        self.group_medians_: pd.Series | None = None
        self.origin_medians_: pd.Series | None = None
        self.global_median_: float | None = None

    @classmethod
    def _keys(cls, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        missing = [col for col in (cls.ORIGIN, cls.HOUR) if col not in frame.columns]
        if missing:
            raise ValueError(f"baseline needs column(s): {', '.join(missing)}")
        # One key dtype for fit and predict, so 7 and 7.0 (int vs float hours) match.
        origin = frame[cls.ORIGIN].astype(object).where(frame[cls.ORIGIN].notna(), None)
        hour = pd.to_numeric(frame[cls.HOUR], errors="coerce").astype(float)
        return origin.reset_index(drop=True), hour.reset_index(drop=True)

    def fit(self, train: pd.DataFrame) -> OriginHourMedianBaseline:
        """Learn the medians from ``train`` (needs origin, sched_hour and arr_delay)."""
        if schema.TARGET not in train.columns:
            raise ValueError(f"baseline needs the target column {schema.TARGET!r}")
        if len(train) == 0:
            raise ValueError("cannot fit the baseline on an empty frame")
        target = pd.to_numeric(train[schema.TARGET], errors="coerce").astype(float)
        bad = int((~np.isfinite(target.to_numpy())).sum())
        if bad:
            raise ValueError(f"{bad} training rows have a missing or non-finite {schema.TARGET}")
        origin, hour = self._keys(train)
        table = pd.DataFrame({"origin": origin, "hour": hour, "y": target.to_numpy()})
        self.group_medians_ = table.dropna().groupby(["origin", "hour"])["y"].median()
        self.origin_medians_ = table.dropna(subset=["origin"]).groupby("origin")["y"].median()
        self.global_median_ = float(np.median(table["y"]))
        return self

    def _predict_with_level(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.group_medians_ is None or self.origin_medians_ is None:
            raise RuntimeError("the baseline is not fitted: call fit(train) first")
        origin, hour = self._keys(frame)
        pairs = pd.MultiIndex.from_arrays([origin, hour])
        by_pair = self.group_medians_.reindex(pairs).to_numpy(dtype=float)
        by_origin = self.origin_medians_.reindex(pd.Index(origin)).to_numpy(dtype=float)
        level = np.where(
            ~np.isnan(by_pair), "origin_hour", np.where(~np.isnan(by_origin), "origin", "global")
        )
        pred = np.where(
            ~np.isnan(by_pair),
            by_pair,
            np.where(~np.isnan(by_origin), by_origin, self.global_median_),
        )
        return pred.astype(float), level

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted arrival delay (minutes) for each row of ``frame`` (origin, sched_hour)."""
        return self._predict_with_level(frame)[0]

    def fallbacks(self, frame: pd.DataFrame) -> dict[str, int]:
        """How many rows of ``frame`` are predicted at each level: ``origin_hour`` (the pair
        was seen in training), ``origin`` (fallback) and ``global`` (second fallback)."""
        level = self._predict_with_level(frame)[1]
        return {name: int((level == name).sum()) for name in self.LEVELS}
