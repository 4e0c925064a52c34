"""The harness's ``ingest`` section: ingest's range read (``source.read_days``: one query a
table for the days, COPY on PostgreSQL) against the same read row by row, and the ingest
step of a fresh root, from SQLite and from PostgreSQL, in the harness's process, in turn.

PostgreSQL is a private cluster started with the no-Docker stack's own code
(deploy/stack/flight_stack: initdb as the `postgres` user, 127.0.0.1 on a free port) and
stopped at the end; without PostgreSQL's binaries the section says so and measures SQLite.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import bench_core as bc
from bench_project import REPO, Project

sys.path.insert(0, str(REPO / "deploy" / "stack"))


@contextlib.contextmanager
def private_postgres(state: Path) -> Iterator[str]:
    """A PostgreSQL cluster of its own with the stack's `warehouse` database; yields its URL."""
    from flight_stack import postgres, settings
    from flight_stack.handle import free_port

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


def ingest_throughput(
    project: Project, day: date, days: int, repeat: int, results: bc.Results
) -> None:
    from flight_delays import ingest
    from flight_delays.intake import pg_copy, source
    from flight_delays.intake.demo import seed
    from flight_delays.store import db

    window = [day - timedelta(days=k) for k in range(days - 1, -1, -1)]
    params = project.params(days)

    def range_read(engine, tables) -> int:
        read = source.read_days(engine, window, tables)
        return sum(len(flights) + len(weather) for flights, weather in read.values())

    def row_by_row(engine, tables) -> int:  # the range read as it was before pg_copy
        copies, pg_copy.copies = pg_copy.copies, lambda engine: False
        try:
            return range_read(engine, tables)
        finally:
            pg_copy.copies = copies

    def fresh_ingest(url: str) -> None:  # every day of the window fetched
        with tempfile.TemporaryDirectory(dir=project.work) as root:
            ingest.run(day=day, root=root, params_file=params, source_url=url)

    backends = {"SQLite": project.url}
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(private_postgres(project.work / "pg-ingest"))
        except Exception as exc:
            results.notes.append(f"ingest: PostgreSQL not measured: {exc}".splitlines()[0])
        else:  # the days, with the 5 weeks before them that the completeness check reads
            seed(url, [0], original_range=(window[0] - timedelta(days=35), day))
            backends["PostgreSQL"] = url
        cases: dict[str, Callable[[], object]] = {}
        counts: dict[str, int] = {}  # rows of flights and weather read, by backend
        for name, backend in backends.items():
            # One engine a backend, its tables reflected once (as a run does), pages warmed.
            engine = db.open_engine(backend)
            stack.callback(engine.dispose)
            tables = source.reflect_source(engine)
            counts[name] = range_read(engine, tables)
            cases[f"{name}: ingest step (fresh root)"] = partial(fresh_ingest, backend)
            cases[f"{name}: range read"] = partial(range_read, engine, tables)
            if pg_copy.copies(engine):  # side by side: the same read, row by row
                cases[f"{name}: range read, row by row"] = partial(row_by_row, engine, tables)
        timings = {case: [] for case in cases}
        for _ in range(repeat):
            for case, work in cases.items():
                started = time.perf_counter()
                work()
                timings[case].append(time.perf_counter() - started)
    for case, seconds in timings.items():
        rows = counts[case.split(":")[0]]
        results.add("ingest", case, seconds, rows=rows, note=f"{rows:,} rows, {days} days")
    if "PostgreSQL" in backends:
        rows = counts["PostgreSQL"]
        rate = rows / bc.median(timings["PostgreSQL: range read"])
        slow = rows / bc.median(timings.get("PostgreSQL: range read, row by row", [float("nan")]))
        results.target(
            "ingest's range read from PostgreSQL ≥ 500k rows/s (issue 22)",
            f"{rate:,.0f} rows/s ({rows:,} rows, {days} days); row by row {slow:,.0f}",
            rate >= 500_000,
        )
