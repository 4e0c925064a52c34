"""The flight features: raw flight and weather rows in, one feature table out.

One row per flight that arrived (has an arrival delay), with the schedule, the weather
at the origin (in the scheduled departure hour, around it and over the day) and how busy
the schedule is (``schema.BASE_FEATURES``). Everything in a row is known before
departure except the target, ``schema.TARGET`` (arrival delay, minutes). The past-day
delay statistics are added later (:mod:`flight_delays.model.history`), where the
holdout start is known.

:func:`build_features` is the pure core. :func:`window_features` puts a window's table
together from the day partitions (:mod:`flight_delays.model.day_features`), each made
once by this module's code. The nightly ``featurize`` step and ``predict`` both use it,
so a served flight gets the features a trained one got.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.errors import SchemaError, SchemaErrors

from flight_delays.base import frames, schema
from flight_delays.base.frames import (
    InvalidFrameError,
    require_columns,
    to_day,
    whole_numbers,
)
from flight_delays.intake import contracts, source
from flight_delays.model import day_features
from flight_delays.store.storage import ArtifactPath

logger = logging.getLogger(__name__)


# The columns the features are computed from, each with the kind it is read as (the
# flights' actuals other than the target, e.g. dep_delay, are never read: they are not
# known before departure).
FLIGHT_COLUMNS = {
    schema.DAY: "day",
    "carrier": "text",
    "flight": "whole",
    "origin": "text",
    "dest": "text",
    "sched_dep_time": "whole",
    "sched_arr_time": "whole",
    "distance": "float",
    schema.TARGET: "float",
}
FLIGHT_REQUIRED = list(FLIGHT_COLUMNS)
WEATHER_COLUMNS = {
    schema.DAY: "day",
    "origin": "text",
    "hour": "whole",
    **dict.fromkeys(schema.WEATHER_MEASURES, "float"),
}
WEATHER_REQUIRED = list(WEATHER_COLUMNS)


IDENTIFIERS = [schema.DAY, "carrier", "flight", "origin", "dest", "sched_dep_time"]


# Identifiers, then every base feature not already among them, then the target. The
# past-day features (schema.HISTORY_FEATURES) are added by split, which knows where the
# holdout starts.
OUTPUT_COLUMNS = list(dict.fromkeys([*IDENTIFIERS, *schema.BASE_FEATURES, schema.TARGET]))


SORT_COLUMNS = [schema.DAY, "origin", "sched_dep_time", "carrier", "flight"]


SCHEDULE_COUNTS = {
    # feature name: the group it counts scheduled flights over
    "origin_hour_departures": [schema.DAY, "origin", schema.SCHED_HOUR],
    "origin_day_departures": [schema.DAY, "origin"],
    "carrier_day_departures": [schema.DAY, "carrier"],
}


MINUTES_PER_DAY = 24 * 60


def _validate(frame_schema: pa.DataFrameSchema, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    # In place: pandera's default copies the frame first, for a coercion that none of these
    # schemas asks for (a fifth of featurize at ten times the flights); nothing is changed.
    try:
        return frame_schema.validate(frame, lazy=True, inplace=True)
    except (SchemaError, SchemaErrors) as exc:
        raise InvalidFrameError(f"{name} frame failed validation: {exc}") from exc


def _hhmm() -> pa.Column:
    # HHMM local clock time; 2400 (midnight at the end of the day) is legal HHMM.
    return pa.Column(
        "int64",
        [pa.Check.in_range(0, 2400), pa.Check(lambda s: s % 100 < 60, name="minutes_lt_60")],
        nullable=False,
    )


def _flight_identity() -> dict[str, pa.Column]:
    """The columns naming a flight, as every flight-level frame here holds them."""
    return {
        schema.DAY: pa.Column("datetime64[ns]", nullable=False),
        "carrier": pa.Column(str, nullable=False),
        "flight": pa.Column("int64", nullable=False),
        "origin": pa.Column(str, nullable=False),
        "dest": pa.Column(str, nullable=False),
        "sched_dep_time": _hhmm(),
    }


FLIGHTS_IN_SCHEMA = pa.DataFrameSchema(
    {
        **_flight_identity(),
        "sched_arr_time": _hhmm(),
        "distance": pa.Column("float64", pa.Check.ge(0), nullable=True),
        schema.TARGET: pa.Column("float64", nullable=True),
    },
    name="flights",
)


WEATHER_IN_SCHEMA = pa.DataFrameSchema(
    {
        schema.DAY: pa.Column("datetime64[ns]", nullable=False),
        "origin": pa.Column(str, nullable=False),
        "hour": pa.Column("int64", pa.Check.in_range(0, 23), nullable=False),
        **{m: pa.Column("float64", nullable=True) for m in schema.WEATHER_MEASURES},
    },
    name="weather",
)


FEATURES_SCHEMA = pa.DataFrameSchema(
    {
        **_flight_identity(),
        schema.SCHED_HOUR: pa.Column("int64", pa.Check.in_range(0, 23), nullable=False),
        "distance": pa.Column("float64", pa.Check.ge(0), nullable=True),
        "sched_block_minutes": pa.Column(
            "int64", pa.Check.in_range(0, MINUTES_PER_DAY - 1), nullable=False
        ),
        **{m: pa.Column("float64", nullable=True) for m in schema.WEATHER_MEASURES},
        **{c: pa.Column("float64", nullable=True) for c in schema.WEATHER_CONTEXT_FEATURES},
        **{c: pa.Column("int64", pa.Check.ge(1), nullable=False) for c in SCHEDULE_COUNTS},
        schema.TARGET: pa.Column(
            "float64", pa.Check(lambda s: np.isfinite(s), name="finite"), nullable=False
        ),
    },
    checks=[
        pa.Check(
            lambda df: df["origin_hour_departures"] <= df["origin_day_departures"],
            name="hour_count_within_day_count",
        ),
    ],
    unique=schema.FLIGHT_KEY,
    strict=True,
    ordered=True,
    name="features",
)


"""The feature table contract: exact columns in order, dtypes and value ranges."""


def _hhmm_to_minutes(hhmm: pd.Series) -> pd.Series:
    """Minutes after midnight of an HHMM clock time (2400 → 1440)."""
    return (hhmm // 100) * 60 + hhmm % 100


def _prepare(
    frame: pd.DataFrame, columns: dict[str, str], rules: pa.DataFrameSchema, what: str
) -> pd.DataFrame:
    """``frame``'s ``columns``, each read as its kind (a day, text, a whole number, a
    float), checked against ``rules``; a missing column or a bad value names ``what``."""
    require_columns(frame, list(columns), what)
    read = {
        "day": lambda c: to_day(frame[c]),
        "text": lambda c: frame[c].astype("str"),
        "whole": lambda c: whole_numbers(frame, c, what),
        "float": lambda c: frame[c].astype("float64"),
    }
    typed = pd.DataFrame({column: read[kind](column) for column, kind in columns.items()})
    return _validate(rules, typed.reset_index(drop=True), what)


def mask_implausible_weather(weather: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """A copy of ``weather`` where each reading outside its measure's physically possible
    range (``schema.WEATHER_PLAUSIBLE_RANGES``) is missing, and the number of readings
    masked per measure (only measures with any). A warning names each masked reading
    (the first five per measure; the count covers all): a sensor error must not be read
    as a storm (the booster would learn from it), and nothing is changed without a
    trace."""
    frame = weather.copy()
    masked: dict[str, int] = {}
    for measure, (low, high) in schema.WEATHER_PLAUSIBLE_RANGES.items():
        if measure not in frame.columns:
            continue
        values = frame[measure]
        bad = (values < low) | (values > high)
        if not bad.any():
            continue
        masked[measure] = int(bad.sum())
        for row in (
            frame.loc[bad, [schema.DAY, "origin", "hour", measure]].head(5).itertuples(index=False)
        ):
            logger.warning(
                "weather %s %s hour %d: %s = %s is outside the plausible %s..%s; "
                "treated as missing",
                pd.Timestamp(row[0]).date(),
                row[1],
                row[2],
                measure,
                row[3],
                low,
                high,
            )
        frame.loc[bad, measure] = np.nan
    return frame, masked


AROUND_HOURS = 2  # the weather "around" hour h covers h-2..h+2 (same day)


AROUND = {  # feature: (measure, aggregation over the hours around)
    "precip_around": ("precip", "sum"),
    "visib_min_around": ("visib", "min"),
    "gust_max_around": ("wind_gust", "max"),
}


DAY_WEATHER = {  # feature: (measure, aggregation over the day's hours)
    "day_precip": ("precip", "sum"),
    "day_visib_min": ("visib", "min"),
    "day_wind_max": ("wind_speed", "max"),
    "day_gust_max": ("wind_gust", "max"),
}


def weather_context(weather: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The origin's weather around each hour and over each day, from hourly weather
    with one row per (local_date, origin, hour) (as :func:`build_features` prepares it).

    Returns ``(around, day)``: ``around`` has one row per (local_date, origin, hour 0-23)
    of a day with any weather and the :data:`AROUND` columns (the hours h-2..h+2 of the
    same day; missing hours are skipped, so a sum counts reported hours only);
    ``day`` has one row per (local_date, origin) and the :data:`DAY_WEATHER` columns.
    """
    keys = [schema.DAY, "origin"]
    day = weather.groupby(keys, as_index=False).agg(
        **{name: (measure, how) for name, (measure, how) in DAY_WEATHER.items()}
    )
    # Every hour of every (day, origin), typed even when there is none (a day without
    # weather): repeated arrays, not tuples.
    grid = pd.MultiIndex.from_arrays(
        [
            np.repeat(day[schema.DAY].to_numpy(), 24),
            np.repeat(day["origin"].to_numpy(), 24),
            np.tile(np.arange(24, dtype="int64"), len(day)),
        ],
        names=[*keys, "hour"],
    )
    hourly = weather.set_index([*keys, "hour"]).reindex(grid).sort_index()
    measures = sorted({measure for measure, _how in AROUND.values()})
    rolling = hourly.groupby(level=keys, sort=False)[measures].rolling(
        2 * AROUND_HOURS + 1, center=True, min_periods=1
    )
    around = pd.DataFrame(index=hourly.index)
    for name, (measure, how) in AROUND.items():
        values = getattr(rolling[measure], how)()
        around[name] = values.droplevel([0, 1]).reindex(hourly.index).to_numpy()
    return around.reset_index(), day


def build_features(
    flights: pd.DataFrame, weather: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Build the feature table from raw flights and hourly origin weather.

    Required columns:

    - ``flights``: ``local_date`` (date or datetime64; the local flight day), ``carrier``,
      ``flight``, ``origin``, ``dest``, ``sched_dep_time`` and ``sched_arr_time`` (HHMM,
      local clock at origin and destination), ``distance`` (miles), ``arr_delay``
      (minutes; null for cancelled or diverted flights). Other columns are ignored.
    - ``weather``: ``local_date``, ``origin``, ``hour`` (0-23 local) and the measures in
      ``schema.WEATHER_MEASURES`` (°F, %, degrees, mph, inches, millibars, miles).

    Steps: duplicate flights on ``schema.FLIGHT_KEY`` are dropped (first kept); weather
    readings outside their physically possible range become missing
    (:func:`mask_implausible_weather`); duplicate weather rows on
    ``schema.WEATHER_KEY`` (the repeated hour at the DST change) are averaged; the
    schedule counts are taken over every scheduled flight, cancelled ones included,
    since the schedule is known before departure; the weather is left-joined at (day,
    origin, scheduled hour), missing weather leaving NaN measures; finally flights
    without ``arr_delay`` are left out.

    Derived features: ``sched_hour`` = hour of ``sched_dep_time`` (0-23; 2400 counts as
    hour 23 so the flight keeps its own day and that day's last weather hour);
    ``sched_block_minutes`` = scheduled
    arrival minus scheduled departure clock time in minutes, plus 1440 when it passes
    midnight (local clocks, so it includes the time-zone difference to ``dest``);
    ``origin_hour_departures``, ``origin_day_departures``, ``carrier_day_departures``
    (scheduled flights per origin and hour, per origin and day, per carrier and day);
    the origin's weather around the scheduled hour and over the day
    (``schema.WEATHER_CONTEXT_FEATURES``, :func:`weather_context`; NaN when no hour
    in reach was reported).

    Returns the table (columns :data:`OUTPUT_COLUMNS`, validated by
    :data:`FEATURES_SCHEMA`, sorted by :data:`SORT_COLUMNS`, fresh 0..n-1 index) and
    counts: ``flights_in``, ``weather_in``, ``duplicate_flights``,
    ``duplicate_weather``, ``implausible_weather`` (readings made missing),
    ``missing_weather`` (flights, before the exclusion, with no
    weather at their origin and hour) and ``excluded_no_arr_delay``. The inputs are
    never modified.

    Raises :class:`~flight_delays.base.frames.MissingColumnsError` for a missing column and
    :class:`~flight_delays.base.frames.InvalidFrameError` for values outside the input or
    output schema.
    """
    features, by_day = _build(flights, weather)
    return features, {name: int(by_day[name].sum()) for name in BUILD_COUNTS}


#: The counts of :func:`build_features`, in order.
BUILD_COUNTS = (
    "flights_in",
    "weather_in",
    "duplicate_flights",
    "duplicate_weather",
    "implausible_weather",
    "missing_weather",
    "excluded_no_arr_delay",
)


def _by_day(values: pd.Series | np.ndarray, days: pd.Series) -> pd.Series:
    """``values`` (a mask or numbers per row) added up by the rows' ``days``."""
    return (
        pd.Series(np.asarray(values, dtype="int64"), index=days.to_numpy()).groupby(level=0).sum()
    )


def _build(flights: pd.DataFrame, weather: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`build_features`, with its counts by day: one row per day of the input
    rows (index: the day, datetime64), a column per :data:`BUILD_COUNTS`. Every count is
    of rows that carry their day, so a day's counts are those of featurizing it alone."""
    fl = _prepare(flights, FLIGHT_COLUMNS, FLIGHTS_IN_SCHEMA, "flights")
    prepared = _prepare(weather, WEATHER_COLUMNS, WEATHER_IN_SCHEMA, "weather")
    wx, _masked = mask_implausible_weather(prepared)
    # readings masked per row: present before, missing after
    measures = [m for m in schema.WEATHER_PLAUSIBLE_RANGES if m in prepared.columns]
    masked = (prepared[measures].notna() & wx[measures].isna()).sum(axis=1)

    duplicate_flights = fl.duplicated(schema.FLIGHT_KEY, keep="first")
    counts = {
        "flights_in": _by_day(np.ones(len(fl)), fl[schema.DAY]),
        "weather_in": _by_day(np.ones(len(wx)), wx[schema.DAY]),
        "duplicate_flights": _by_day(duplicate_flights, fl[schema.DAY]),
        "duplicate_weather": _by_day(wx.duplicated(schema.WEATHER_KEY), wx[schema.DAY]),
        "implausible_weather": _by_day(masked, wx[schema.DAY]),
    }
    fl = fl.loc[~duplicate_flights].reset_index(drop=True)
    wx = wx.groupby(schema.WEATHER_KEY, as_index=False, sort=False)[schema.WEATHER_MEASURES].mean()

    fl[schema.SCHED_HOUR] = (fl["sched_dep_time"] // 100).clip(upper=23)
    block = _hhmm_to_minutes(fl["sched_arr_time"]) - _hhmm_to_minutes(fl["sched_dep_time"])
    fl["sched_block_minutes"] = block % MINUTES_PER_DAY  # floor modulo: wraps past midnight
    for name, group in SCHEDULE_COUNTS.items():
        fl[name] = fl.groupby(group)["flight"].transform("size").astype("int64")

    joined = fl.merge(
        wx.rename(columns={"hour": schema.SCHED_HOUR}),
        on=[schema.DAY, "origin", schema.SCHED_HOUR],
        how="left",
        validate="many_to_one",
        indicator="_weather",
    )
    counts["missing_weather"] = _by_day(joined["_weather"] == "left_only", joined[schema.DAY])
    around, day_weather = weather_context(wx)
    joined = joined.merge(
        around.rename(columns={"hour": schema.SCHED_HOUR}),
        on=[schema.DAY, "origin", schema.SCHED_HOUR],
        how="left",
        validate="many_to_one",
    ).merge(day_weather, on=[schema.DAY, "origin"], how="left", validate="many_to_one")

    arrived = joined[schema.TARGET].notna()
    counts["excluded_no_arr_delay"] = _by_day(~arrived, joined[schema.DAY])
    features = (
        joined.loc[arrived, OUTPUT_COLUMNS]
        .sort_values(SORT_COLUMNS, kind="stable")
        .reset_index(drop=True)
    )
    features = _validate(FEATURES_SCHEMA, features, "features")
    by_day = pd.DataFrame({name: counts[name] for name in BUILD_COUNTS}).fillna(0)
    return features, by_day.astype("int64").sort_index()


def featurize_rows(
    flights: pd.DataFrame, weather: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`build_features` after the data contract: flights of partitions frozen
    before ingest checked the contract may hold rows that break it; those rows are left
    out (counted: ``failed_contract``, and by check in ``contract``) rather than fail
    every run whose window holds that day. Returns the table and the counts of
    :func:`build_features` plus those two."""
    features, by_day, checked = _featurize(flights, weather)
    counts = {name: int(by_day[name].sum()) for name in BUILD_COUNTS}
    return features, {
        **counts,
        "failed_contract": len(checked.quarantine),
        "contract": dict(checked.counts),
    }


def _featurize(
    flights: pd.DataFrame, weather: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, contracts.Checked]:
    checked = contracts.check_flights(flights, None, source.FLIGHT_DTYPES)
    if len(checked.quarantine):
        flights = checked.good
    features, by_day = _build(flights, weather)
    return features, by_day, checked


def featurize_by_day(
    flights: pd.DataFrame, weather: pd.DataFrame, days: list[date]
) -> tuple[pd.DataFrame, dict[date, dict[str, Any]]]:
    """:func:`featurize_rows` of rows of ``days``, with the counts of each day apart: as
    featurizing that day's rows alone would count them (a day without rows: zeros). The
    table is the one of featurize_rows (sorted by day first). One call over many days
    costs what featurize_rows over them costs: the validations run once, not per day.

    Raises ValueError naming a day of the rows that is not in ``days``."""
    features, by_day, checked = _featurize(flights, weather)
    # The quarantined rows' days, as the flights carried them (unreadable: NaT).
    raw_days = flights[schema.DAY].iloc[checked.failed] if len(checked.failed) else None
    failed = pd.Series(
        pd.to_datetime(raw_days, errors="coerce") if raw_days is not None else [],
        dtype="datetime64[ns]",
    ).dt.normalize()
    wanted = pd.DatetimeIndex([pd.Timestamp(d) for d in days])
    extra = by_day.index.union(pd.DatetimeIndex(failed.dropna())).difference(wanted)
    if failed.isna().any() or len(extra):
        found = ", ".join(str(d.date()) for d in extra) or "an unreadable day"
        raise ValueError(f"featurize by day: rows of {found}, not among the days asked for")
    by_day = by_day.reindex(wanted, fill_value=0)
    checks = checked.quarantine[contracts.CHECKS].str.split(",").to_numpy()
    out: dict[date, dict[str, Any]] = {}
    for day in wanted:
        mine = (failed == day).to_numpy()
        # a row counts once per check it failed, as Checked.counts counts them
        names = [set(row) for row in checks[mine]]
        out[day.date()] = {
            **{name: int(by_day.at[day, name]) for name in BUILD_COUNTS},
            "failed_contract": int(mine.sum()),
            "contract": {
                name: n for name in checked.counts if (n := sum(name in r for r in names))
            },
        }
    return features, out


@functools.cache
def code_fingerprint() -> str:
    """The fingerprint of the code that computes a day's features (this module, the
    contract, the column declarations and frame helpers, the source's dtypes, the
    partition format), part of every day partition's key."""
    return day_features.code_fingerprint(
        [sys.modules[__name__], contracts, schema, frames, source, day_features]
    )


def window_features(
    root: ArtifactPath, days: list[date], recorded: Mapping[date, dict[str, str] | None]
) -> tuple[pyarrow.Table, dict[str, Any], int]:
    """The window's feature table and counts, as :func:`featurize_rows` gives them for
    the window's raw rows, put together from the days' partitions (each made once:
    :func:`flight_delays.model.day_features.window`); and how many days were reused. The table
    is Arrow's, with the pandas metadata (``to_pandas()`` gives featurize_rows' frame):
    the run writes it as it is, without a pandas round trip over the window.

    Each day's rows were validated by :data:`FEATURES_SCHEMA` when they were computed
    (build_features), and a reused day is the file written then, whole (its key in the
    same file); so the window's table is checked for its columns, their order and
    dtypes only (the schema on no rows), not row by row again (seconds at a 364-day
    window). No check spans days: the flight key holds the day."""
    features, counts, reused = day_features.window(
        root, days, recorded, code_fingerprint(), featurize_by_day, featurize_rows
    )
    _validate(FEATURES_SCHEMA, features.slice(0, 0).to_pandas(), "features")
    return features, counts, reused
