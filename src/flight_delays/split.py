"""Split: cut the feature table in time into a training part and a holdout, then add
the past-day delay statistics.

The holdout is the last ``holdout_days`` days ending on the processed day; training is
everything strictly before it. A time split (not a random one) because the model is
used on days it has never seen, and neighbouring flights share weather and congestion.

The past-day statistics (``schema.HISTORY_FEATURES``) are added here, not in featurize,
because they depend on where the holdout starts: a holdout row may only use days before
the holdout, never its own day's or another holdout day's delays (see
:mod:`flight_delays.model.history`).

Pure cores: :func:`split_by_day` (the cut) and :func:`split_with_history` (the cut plus
the statistics, what the DAG's split task and the backtest run); :data:`STEP` declares
the step for the runner (:mod:`flight_delays.store.step_runner`), whose ``run`` the DAG calls.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from flight_delays.base import schema
from flight_delays.base.dates import parse_day
from flight_delays.base.frames import require_columns, to_day
from flight_delays.model import history
from flight_delays.store import artifacts, step_runner
from flight_delays.store.config import SplitSettings

TASK = "split"


def holdout_range(day: date, holdout_days: int) -> tuple[date, date]:
    """The first and last day (inclusive) of the ``holdout_days`` days ending on ``day``."""
    if holdout_days < 1:
        raise ValueError(f"holdout_days must be >= 1, got {holdout_days}")
    return day - timedelta(days=holdout_days - 1), day


def split_by_day(
    features: pd.DataFrame, day: date | str, holdout_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``features`` into (train, holdout) by ``local_date``.

    Required column: ``local_date`` (the flight day; date or datetime64, any time of day
    is ignored). Holdout: rows dated within the ``holdout_days`` days ending on ``day``,
    both ends included. Train: rows dated strictly before the holdout's first day. Both
    keep every column and the input's row order, with a fresh 0..n-1 index; the input
    is never modified.

    Raises ValueError when a row is dated after ``day`` (it would leak the future into
    the evaluation), when ``local_date`` has nulls, or when either side is empty (the
    message names the side and its date range); :class:`MissingColumnsError` when
    ``local_date`` is missing.
    """
    require_columns(features, [schema.DAY], "features")
    in_holdout = holdout_rows(features[schema.DAY], day, holdout_days)
    first = int(np.argmax(in_holdout))
    if in_holdout[first:].all():
        # Rows sorted by day (featurize's order): the holdout is the last rows, and both
        # sides are slices that share the table's memory rather than copies of its rows
        # (at ten times the flights, 750 MiB less at the split step's peak).
        return (
            features.iloc[:first].reset_index(drop=True),
            features.iloc[first:].reset_index(drop=True),
        )
    train = features.loc[~in_holdout].reset_index(drop=True)
    holdout = features.loc[in_holdout].reset_index(drop=True)
    return train, holdout


def holdout_rows(days: pd.Series, day: date | str, holdout_days: int) -> np.ndarray:
    """Which of the feature rows dated ``days`` are the holdout's (:func:`split_by_day`'s
    rule); the others are the training rows. Raises ValueError when a row is dated after
    ``day``, has no day, or when either side is empty (the message names the side and
    its date range)."""
    day = parse_day(day)
    start, end = holdout_range(day, holdout_days)
    days = to_day(days)
    if days.isna().any():
        raise ValueError(f"features frame has {int(days.isna().sum())} rows without {schema.DAY}")
    covered = (
        f"features cover {days.min().date()}..{days.max().date()}"
        if len(days)
        else "features are empty"
    )
    late = days > pd.Timestamp(end)
    if late.any():
        raise ValueError(
            f"{int(late.sum())} feature rows are dated after the processed day {end} "
            f"({covered}): refusing to split, they would leak the future"
        )
    in_holdout = (days >= pd.Timestamp(start)).to_numpy()
    if in_holdout.all():
        raise ValueError(
            f"train side is empty: no rows dated before the holdout start {start} ({covered})"
        )
    if not in_holdout.any():
        raise ValueError(f"holdout side is empty: no rows dated {start}..{end} ({covered})")
    return in_holdout


def split_with_history(
    features: pd.DataFrame,
    day: date | str,
    holdout_days: int,
    recent_days: int,
    history_days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`split_by_day`, then :func:`flight_delays.model.history.add_history_features`
    with the holdout's first day as the cutoff, blocks of ``holdout_days`` days, and
    lookbacks of ``recent_days`` (recent delay level) and ``history_days`` (group
    statistics) days.

    ``features`` is featurize's table (needs ``local_date``, ``arr_delay`` and the
    history group keys: origin, carrier, dest, flight, sched_hour). Returns (train,
    holdout), each with every input column plus ``schema.HISTORY_FEATURES``, fresh
    0..n-1 indexes; the input is never modified. Only the train rows' arrival delays are
    read for the statistics.
    """
    train, holdout = split_by_day(features, day, holdout_days)
    return with_history(train, holdout, day, holdout_days, recent_days, history_days)


def with_history(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    day: date | str,
    holdout_days: int,
    recent_days: int,
    history_days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two sides of :func:`split_by_day` with the past-day statistics added (the
    second half of :func:`split_with_history`)."""
    start, _end = holdout_range(parse_day(day), holdout_days)
    return history.add_history_features(
        train,
        holdout,
        cutoff=start,
        block_days=holdout_days,
        statistics=history.history_statistics(recent_days, history_days),
    )


def split_core(day: date, params: SplitSettings, features: pd.DataFrame) -> step_runner.Result:
    """The step's core: :func:`split_with_history` of the feature table, holding out
    ``params.holdout_days`` days, with the summary the XCom and the log line carry."""
    rows_in = len(features)
    train, holdout = split_with_history(
        features, day, params.holdout_days, params.recent_days, params.history_days
    )
    start, end = holdout_range(day, params.holdout_days)
    return step_runner.Result(
        outputs={"train": train, "holdout": holdout},
        summary={
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "holdout_start": start.isoformat(),
            "holdout_end": end.isoformat(),
        },
        line=f"{rows_in} rows in -> {len(train)} train (before {start}) + {len(holdout)} "
        f"holdout ({start}..{end}, {100 * len(holdout) / (len(train) + len(holdout)):.0f}%) out",
    )


#: Reads the ``features`` artifact (``processed(day)``), writes the ``train_table`` and
#: ``holdout_table`` artifacts beside it. A missing feature table raises
#: :class:`flight_delays.store.io.MissingArtifactError` naming the ``featurize`` task.
#: The XCom dict: ``{"train": location, "holdout": location, "train_rows": n,
#: "holdout_rows": m, "holdout_start": iso, "holdout_end": iso}``.
STEP = step_runner.Step(
    name=TASK,
    core=split_core,
    reads={"features": artifacts.FEATURES},
    writes={"train": artifacts.TRAIN_TABLE, "holdout": artifacts.HOLDOUT_TABLE},
    params=lambda settings: settings.split,
)
run = STEP.run
