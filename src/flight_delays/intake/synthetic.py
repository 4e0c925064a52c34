"""A synthetic warehouse: ``factor`` times the flights of each real day, drawn from that
day's real distributions, for measuring the pipeline at ten times the rows (issue 22).

Each real flight stays. Each extra copy ``k = 1 .. factor - 1`` of a flight is a new
flight of the same day, carrier and origin (the data contract knows only the data set's
carriers and New York origins):

- its flight number is ``flight + 10000 * k``, so its flight key (day, carrier, flight,
  origin, scheduled departure) is its own;
- its route is a real route of the same origin that day: a real flight of that origin is
  drawn, and the copy takes its destination, distance and scheduled block time (the
  arrival clock time, in the destination's time zone, follows from it);
- it departs up to 45 minutes earlier or later (a whole number of minutes, drawn; a
  departure that would leave the day is shifted the other way);
- its delays (and whether it was cancelled or diverted) are a real flight's of the same
  origin and scheduled hour that day (any hour of that origin when the hour has none),
  so delays keep their tie to the hour and the weather; its air time is its route's.

The weather is the day's real weather: it is by airport and hour, not by flight. The
draws are seeded by the day, the copy and ``seed``, so a synthetic day is the same every
time it is made. ``python -m flight_delays.intake.demo seed --factor 10`` loads it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flight_delays.base import schema

#: Copies of a flight are numbered ``flight + FLIGHT_STEP * k`` (real flight numbers are
#: below 10000).
FLIGHT_STEP = 10_000
#: The largest departure shift of a copy, minutes either way.
MAX_SHIFT_MINUTES = 45
MINUTES_PER_DAY = 24 * 60


def _minutes(hhmm: np.ndarray) -> np.ndarray:
    return (hhmm // 100) * 60 + hhmm % 100


def _hhmm(minutes: np.ndarray) -> np.ndarray:
    minutes = np.mod(minutes, MINUTES_PER_DAY)
    return (minutes // 60) * 100 + minutes % 60


def _draw_within(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each position, the position of a random row with the same group label."""
    drawn = np.empty(len(groups), dtype=np.int64)
    for label in np.unique(groups):
        members = np.flatnonzero(groups == label)
        drawn[members] = members[rng.integers(0, len(members), len(members))]
    return drawn


def _copy(day: pd.DataFrame, k: int, rng: np.random.Generator) -> pd.DataFrame:
    """Copy ``k`` of one day's real flights (see the module's docstring)."""
    n = len(day)
    origin = day["origin"].to_numpy()
    route = _draw_within(origin, rng)
    sched_dep = _minutes(day["sched_dep_time"].to_numpy(dtype=np.int64))
    shift = rng.integers(-MAX_SHIFT_MINUTES, MAX_SHIFT_MINUTES + 1, n)
    departs = sched_dep + shift
    departs = np.where((departs < 0) | (departs >= MINUTES_PER_DAY), sched_dep - shift, departs)
    route_dep = sched_dep[route]
    route_arr = _minutes(day["sched_arr_time"].to_numpy(dtype=np.int64))[route]
    block = np.mod(route_arr - route_dep, MINUTES_PER_DAY)
    # The delay donor: a flight of the same origin and scheduled hour (else any hour).
    hour_group = np.char.add(origin.astype(str), (departs // 60).astype(str))
    real_group = np.char.add(origin.astype(str), (sched_dep // 60).astype(str))
    donor = _draw_within(origin, rng)
    by_hour = {label: np.flatnonzero(real_group == label) for label in np.unique(real_group)}
    for label in np.unique(hour_group):
        want = np.flatnonzero(hour_group == label)
        pool = by_hour.get(label)
        if pool is not None:
            donor[want] = pool[rng.integers(0, len(pool), len(want))]
    dep_delay = day["dep_delay"].to_numpy(dtype=float)[donor]
    arr_delay = day["arr_delay"].to_numpy(dtype=float)[donor]
    dep_time = day["dep_time"].to_numpy(dtype=float)[donor]
    arr_time = day["arr_time"].to_numpy(dtype=float)[donor]
    air_time = day["air_time"].to_numpy(dtype=float)[route]
    sched_arr = departs + block
    out = day.copy()
    out["flight"] = day["flight"].to_numpy() + FLIGHT_STEP * k
    out["dest"] = day["dest"].to_numpy()[route]
    out["distance"] = day["distance"].to_numpy()[route]
    out["sched_dep_time"] = _hhmm(departs)
    out["sched_arr_time"] = _hhmm(sched_arr)
    # The donor's outcome: no departure (cancelled) or no arrival (cancelled, diverted).
    out["dep_delay"] = dep_delay
    out["dep_time"] = np.where(
        np.isnan(dep_time), np.nan, _hhmm(departs + np.nan_to_num(dep_delay)).astype(float)
    )
    out["arr_delay"] = arr_delay
    out["arr_time"] = np.where(
        np.isnan(arr_time), np.nan, _hhmm(sched_arr + np.nan_to_num(arr_delay)).astype(float)
    )
    out["air_time"] = np.where(np.isnan(arr_delay), np.nan, air_time)
    return out.astype(day.dtypes.to_dict())


def synthesize(flights: pd.DataFrame, factor: int, seed: int = 0) -> pd.DataFrame:
    """``flights`` (replayed rows of :data:`flight_delays.intake.source.FLIGHTS`, any
    number of days) with ``factor - 1`` synthetic copies of each day's flights added
    after its real ones. ``factor`` 1 returns the rows unchanged. The input is not
    modified."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"the synthetic factor is a whole number >= 1, got {factor!r}")
    if (flights["flight"] >= FLIGHT_STEP).any():
        raise ValueError(f"real flight numbers are below {FLIGHT_STEP}: the copies need them")
    if factor == 1 or flights.empty:
        return flights.copy()
    parts = []
    for day, rows in flights.groupby(schema.DAY, sort=True):
        rows = rows.reset_index(drop=True)
        parts.append(rows)
        for k in range(1, factor):
            rng = np.random.default_rng([seed, pd.Timestamp(day).toordinal(), k])
            parts.append(_copy(rows, k, rng))
    return pd.concat(parts, ignore_index=True)
