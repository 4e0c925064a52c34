"""Past-day delay statistics: what the days before a flight's history cutoff say about it.

The features (``schema.HISTORY_FEATURES``) are medians of the arrival delay (minutes) of
the flights that arrived on *earlier* days, by group: all New York departures and the
origin over the last ``recent_days`` (the current level of delays), carrier, route,
origin and hour, and flight number over the last ``history_days`` (steady differences
between groups); plus ``history_lag_days``.

They need the holdout's first day (the *cutoff*), so the split step adds them, not
featurize: :func:`add_history_features` is the pure core :func:`flight_delays.split.
split_with_history` calls. No statistic ever reads an arrival delay of the holdout or of
the row's own day:

- a holdout row (dated on or after the cutoff) sees the days before the cutoff, as a
  nightly model predicting the next ``holdout_days`` days would: 1 to ``holdout_days``
  days old;
- a training row sees the days before its own *block*: the training days are cut, back
  from the cutoff, into blocks of ``block_days`` days (the holdout's length), and a row
  of a block sees only the days before the block's first day. So training rows see
  statistics exactly as stale as the holdout rows do, and the model learns how much to
  trust them at each lag (``history_lag_days``: the row's day minus its history end,
  plus one, 1..block_days).

Each statistic covers its lookback of days before the history end (fewer at the start
of the window: the window holds no older days) and are left missing (NaN, which the
booster routes as missing) for a group with fewer than :data:`MIN_FLIGHTS` flights there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import TypeAlias

import numpy as np
import pandas as pd

from flight_delays.base import schema
from flight_delays.base.frames import require_columns, to_day

#: A group's median is left missing below this many flights in the lookback: a median
#: of two or three flights is mostly noise.
MIN_FLIGHTS = 5

#: feature name -> (group keys, lookback in days)
Statistics: TypeAlias = Mapping[str, tuple[Sequence[str], int]]


def history_statistics(recent_days: int, history_days: int) -> dict[str, tuple[list[str], int]]:
    """The statistics of ``schema.HISTORY_FEATURES``: the recent groups
    (``schema.RECENT_HISTORY_GROUPS``) over ``recent_days``, the others
    (``schema.HISTORY_GROUPS``) over ``history_days``."""
    for name, value in (("recent_days", recent_days), ("history_days", history_days)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return {
        **{name: (keys, recent_days) for name, keys in schema.RECENT_HISTORY_GROUPS.items()},
        **{name: (keys, history_days) for name, keys in schema.HISTORY_GROUPS.items()},
    }


def history_ends(days: pd.Series, cutoff: date, block_days: int) -> pd.Series:
    """For each day, the first day its history may NOT use (datetime64, exclusive end).

    Days on or after ``cutoff`` (the holdout) get ``cutoff``; a day before it gets the
    first day of its block, the blocks being ``block_days`` days long counted back from
    ``cutoff``: with a cutoff on the 15th and 7-day blocks, the 8th..14th get the 8th,
    the 1st..7th the 1st.
    """
    if block_days < 1:
        raise ValueError(f"block_days must be >= 1, got {block_days}")
    cut = pd.Timestamp(cutoff)
    before = (cut - to_day(days)).dt.days.clip(lower=0).to_numpy()
    blocks = np.ceil(before / block_days).astype("int64")
    return pd.Series(cut - pd.to_timedelta(blocks * block_days, unit="D"), index=days.index)


def _group_medians(reference: pd.DataFrame, rows: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """Median target of ``reference`` per ``keys`` group (groups with at least
    MIN_FLIGHTS flights), looked up for every row of ``rows``; NaN where none."""
    if not keys:
        value = reference[schema.TARGET].median() if len(reference) >= MIN_FLIGHTS else np.nan
        return np.full(len(rows), value, dtype=float)
    stats = reference.groupby(list(keys), sort=False, observed=True)[schema.TARGET].agg(
        ["median", "size"]
    )
    medians = stats.loc[stats["size"] >= MIN_FLIGHTS, "median"]
    looked_up = pd.MultiIndex.from_frame(rows[list(keys)]) if len(keys) > 1 else rows[keys[0]]
    return medians.reindex(looked_up).to_numpy(dtype=float)


def add_history_features(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    cutoff: date,
    block_days: int,
    statistics: Statistics,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copies of ``train`` and ``holdout`` with one column per entry of ``statistics``
    (feature name -> (group keys, lookback days), e.g. :func:`history_statistics`) and
    ``schema.HISTORY_LAG``; see the module docstring for the rules.

    Required columns: ``local_date`` and the group keys in both frames; ``arr_delay``
    (minutes) in ``train``, the only frame whose target is read. Every ``train`` row must
    be dated before ``cutoff`` (ValueError otherwise: its delay would describe the
    holdout). Inputs are not modified; row order and index are kept.
    """
    if not statistics:
        raise ValueError("statistics is empty: name at least one past-day statistic")
    for name, (_keys, lookback) in statistics.items():
        if lookback < 1:
            raise ValueError(f"lookback of {name} must be >= 1 day, got {lookback}")
    keys = sorted({key for group, _lookback in statistics.values() for key in group})
    require_columns(train, [schema.DAY, schema.TARGET, *keys], "train")
    require_columns(holdout, [schema.DAY, *keys], "holdout")
    cut = pd.Timestamp(cutoff)
    train_days = to_day(train[schema.DAY])
    late = train_days >= cut
    if late.any():
        raise ValueError(
            f"{int(late.sum())} train rows are dated on or after the history cutoff "
            f"{cut.date()}: their delays would leak into the holdout's history features"
        )

    # The only delays any statistic reads: the train rows'.
    reference = pd.DataFrame(
        {schema.DAY: train_days, **{k: train[k] for k in keys}, schema.TARGET: train[schema.TARGET]}
    )
    outputs = []
    for frame in (train, holdout):
        ends = history_ends(frame[schema.DAY], cutoff, block_days)
        columns = {name: np.full(len(frame), np.nan) for name in statistics}
        for end in ends.unique():
            at = (ends == end).to_numpy()
            rows = frame.loc[at, keys]  # the group keys only: the frame may be millions of rows
            for name, (group_keys, lookback) in statistics.items():
                start = end - pd.Timedelta(days=lookback)
                days = reference[schema.DAY]
                window = reference.loc[(days >= start) & (days < end)]
                columns[name][at] = _group_medians(window, rows, group_keys)
        lag = (to_day(frame[schema.DAY]) - ends).dt.days.to_numpy() + 1
        outputs.append(frame.assign(**columns, **{schema.HISTORY_LAG: lag.astype("int64")}))
    return outputs[0], outputs[1]
