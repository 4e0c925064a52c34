"""Ingest throughput from SQLite and PostgreSQL against a bare ``pandas.read_sql`` of the
same queries (the contract's columns of one day's flights and weather, ordered by their
keys), in the harness's process, the cases in turn.

PostgreSQL is a private cluster started with the no-Docker stack's own code
(deploy/stack/flight_stack: initdb as the `postgres` user, 127.0.0.1 on a free port) and
stopped at the end; without PostgreSQL's binaries the section says so and measures SQLite.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import bench_measure as bm
from bench_project import REPO, Project
from bench_results import Results, Row, Target

sys.path.insert(0, str(REPO / "deploy" / "stack"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def private_postgres(state: Path) -> Iterator[str]:
    """A PostgreSQL cluster of its own with the stack's `warehouse` database; yields its URL."""
    from flight_stack import postgres, settings

    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # the postgres user must reach its data folder
    env = {"FLIGHT_DELAYS_STACK_DIR": str(state), "FLIGHT_DELAYS_STACK_PG_PORT": str(free_port())}
    cfg = settings.Config.from_env(env)
    values = settings.ensure_secrets(cfg)
    pg = postgres.Postgres(cfg)
    if not pg.initialised():
        pg.init(values["postgres_password"])
    pg.start()
    try:
        postgres.create_databases(cfg, values)
        yield settings.warehouse_url(cfg, values)
    finally:
        pg.stop()
        if pg.relocated:  # a data folder outside the state folder (see flight_stack.postgres)
            shutil.rmtree(pg.pgdata.parent, ignore_errors=True)


def _bare_read(engine, days: list[date]) -> int:
    """Rows read by pandas.read_sql, day by day, as ingest's queries read them."""
    import pandas as pd
    from sqlalchemy import bindparam, select

    from flight_delays.base import schema
    from flight_delays.intake import source

    queries = [
        select(*table.c)
        .where(table.c[schema.DAY] == bindparam("day"))
        .order_by(*(table.c[k] for k in key))
        for table, key in (
            (source.FLIGHTS, schema.FLIGHT_KEY),
            (source.WEATHER, schema.WEATHER_KEY),
        )
    ]
    rows = 0
    with engine.connect() as conn:
        for day in days:
            for query in queries:
                rows += len(pd.read_sql(query, conn, params={"day": day}))
    return rows


def _range_read(engine, tables: dict, days: list[date]) -> int:
    """Rows read by ingest's own range read (``source.read_days``: one query a table for
    the days, split by day), as a first run reads its window; the tables reflected once,
    outside the timing, as ingest reflects them once a run."""
    from flight_delays.intake import source

    read = source.read_days(engine, days, tables)
    return sum(len(flights) + len(weather) for flights, weather in read.values())


def _row_path_read(engine, tables: dict, days: list[date]) -> int:
    """:func:`_range_read` with PostgreSQL's COPY path switched off: the same query, its
    rows as Python objects (what the range read was before ``intake.pg_copy``)."""
    from flight_delays.intake import pg_copy

    copies, pg_copy.copies = pg_copy.copies, lambda engine: False
    try:
        return _range_read(engine, tables, days)
    finally:
        pg_copy.copies = copies


def _ingest(url: str, day: date, params: Path, work: Path) -> None:
    """The ingest step for a fresh root: every day of the window is fetched."""
    from flight_delays import ingest

    with tempfile.TemporaryDirectory(dir=work) as root:
        ingest.run(day=day, root=root, params_file=params, source_url=url)


def _timed(work: callable) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def ingest_throughput(
    project: Project, day: date, days: int, repeat: int, results: Results
) -> None:
    from flight_delays.intake import pg_copy, source
    from flight_delays.intake.demo import seed
    from flight_delays.store import db

    window = [day - timedelta(days=k) for k in range(days - 1, -1, -1)]
    params = project.params(days)
    backends = {"SQLite": project.url}
    with contextlib.ExitStack() as stack:
        try:
            pg_url = stack.enter_context(private_postgres(project.work / "pg-ingest"))
        except Exception as exc:
            results.notes.append(f"ingest: PostgreSQL not measured: {exc}".splitlines()[0])
        else:
            # The same days, with the 4 weeks before them that ingest's completeness
            # check reads.
            seed(pg_url, [0], original_range=(window[0] - timedelta(days=35), day))
            backends["PostgreSQL"] = pg_url
        # One engine a backend for the reads (opening and closing it is not the read), its
        # tables reflected, its pages warmed by a first read.
        engines = {name: db.open_engine(url) for name, url in backends.items()}
        for engine in engines.values():
            stack.callback(engine.dispose)
        tables = {name: source.reflect_source(engine) for name, engine in engines.items()}
        warmed = {name: _bare_read(engine, window) for name, engine in engines.items()}
        rows = warmed["SQLite"]
        copying = {name for name, engine in engines.items() if pg_copy.copies(engine)}
        timings: dict[str, dict[str, list[float]]] = {
            b: {"ingest": [], "read_sql": [], "read_days": []}
            | ({"read_rows": []} if b in copying else {})
            for b in backends
        }
        for _ in range(repeat):
            for name, url in backends.items():
                timings[name]["ingest"].append(
                    _timed(lambda u=url: _ingest(u, day, params, project.work))
                )
                engine = engines[name]
                timings[name]["read_sql"].append(_timed(lambda e=engine: _bare_read(e, window)))
                timings[name]["read_days"].append(
                    _timed(lambda e=engine, n=name: _range_read(e, tables[n], window))
                )
                if name in copying:  # side by side: the same read, row by row
                    timings[name]["read_rows"].append(
                        _timed(lambda e=engine, n=name: _row_path_read(e, tables[n], window))
                    )
    series = {}
    for name, t in timings.items():
        ratio = bm.median([a / b for a, b in zip(t["read_sql"], t["ingest"], strict=True)])
        for case, label in (
            ("ingest", "ingest step (fresh root)"),
            ("read_sql", "bare pandas.read_sql, a query a day and table"),
            ("read_days", "ingest's range read (source.read_days), a query a table"),
            ("read_rows", "the same range read, row by row (without COPY)"),
        ):
            if case not in t:
                continue
            med, low, high = bm.spread(t[case])
            note = f"{rows:,} rows, {days} days" + (
                f"; ingest at {ratio:.2f}x read_sql's rate" if case == "ingest" else ""
            )
            results.add(Row("ingest", f"{name}: {label}", med, low, high, None, rows / med, note))
        series[name] = {case: rows / bm.median(t[case]) for case in t}
    results.series["ingest"] = series
    if "PostgreSQL" in series:
        rate = series["PostgreSQL"]["read_days"]
        results.target(
            Target(
                "ingest's range read from PostgreSQL ≥ 500k rows/s (issue 22)",
                f"{rate:,.0f} rows/s ({rows:,} rows, {days} days); row by row "
                f"{series['PostgreSQL'].get('read_rows', float('nan')):,.0f}",
                rate >= 500_000,
            )
        )
