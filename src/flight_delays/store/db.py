"""Database connections: URLs (with the ``postgres://`` scheme Airflow renders), their
password-masked form for messages, engines (a SQLite file's folder made on request), and
PostgreSQL advisory locks (:func:`advisory_lock`), which order processes on any host that
reaches the database.

The warehouse source (:mod:`flight_delays.intake.source`), the demo seed
(:mod:`flight_delays.intake.demo`) and the model registry
(:mod:`flight_delays.store.registry`) all open their databases here.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from flight_delays.base.errors import PipelineDataError

#: The Airflow connection that names the warehouse (docker-compose and `make up` define
#: it); without it, source.url of params.yaml, then FLIGHT_DELAYS_SOURCE_URL, then the
#: embedded SQLite file, unless REQUIRE_CONN_ENV is true (then the task fails, retried).
WAREHOUSE_CONN_ID = "flight_delays_warehouse"
#: Set to "true" by a deployment that defines WAREHOUSE_CONN_ID (docker-compose, `make up`):
#: a task that cannot get the connection then fails, and is retried, instead of falling
#: back to another warehouse. Airflow reports a lookup that failed (the metastore or the
#: execution API down for a moment) as "not defined", so only the deployment can tell.
REQUIRE_CONN_ENV = "FLIGHT_DELAYS_REQUIRE_WAREHOUSE_CONN"
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")

log = logging.getLogger(__name__)


class WarehouseConnectionMissingError(RuntimeError):
    """The deployment defines the warehouse connection, and it could not be had. Not a
    data error: most often the lookup failed for a moment, and a retry gets it."""


def connection_required() -> bool:
    """Whether this deployment defines the warehouse connection (REQUIRE_CONN_ENV)."""
    value = os.environ.get(REQUIRE_CONN_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise PipelineDataError(f"{REQUIRE_CONN_ENV}={value!r}: expected true or false")
    return value in _TRUE


def warehouse_url(conn: Any) -> str | None:
    """The warehouse URL from a task context's ``conn`` accessor (Airflow's), or None for
    the package's default. Called when a task runs, so the password never lands in the
    task's rendered fields. The connection wins over ``source.url``/``registry.url`` of
    params.yaml and FLIGHT_DELAYS_SOURCE_URL; the task log says which one is used.

    Raises WarehouseConnectionMissingError when the connection is not had and the
    deployment defines it (:func:`connection_required`)."""
    required = connection_required()
    connection = conn.get(WAREHOUSE_CONN_ID)
    if connection is None and required:
        raise WarehouseConnectionMissingError(
            f"the Airflow connection {WAREHOUSE_CONN_ID!r} could not be had, and this "
            f"deployment defines it ({REQUIRE_CONN_ENV}=true). Airflow says 'not defined' "
            "also when the lookup failed (the metastore or the execution API down for a "
            "moment), so this task fails and is retried rather than read another warehouse "
            "(source.url, FLIGHT_DELAYS_SOURCE_URL or the embedded SQLite file). If it "
            "persists, check that the connection exists: airflow connections get "
            f"{WAREHOUSE_CONN_ID}"
        )
    if connection is None:
        log.info(
            "warehouse and registry: no Airflow connection %r, so source.url / registry.url "
            "of params.yaml, else FLIGHT_DELAYS_SOURCE_URL, else the embedded SQLite file",
            WAREHOUSE_CONN_ID,
        )
        return None
    url = connection.get_uri()
    log.info(
        "warehouse and registry: the Airflow connection %r (%s); it overrides source.url "
        "and registry.url of params.yaml and FLIGHT_DELAYS_SOURCE_URL",
        WAREHOUSE_CONN_ID,
        safe_url(url),
    )
    return url


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return sqlalchemy_url(url).render_as_string(hide_password=True)


def sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None (another database, or in memory)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def sqlalchemy_url(url: str | URL) -> URL:
    """Parse ``url``, accepting the ``postgres://`` scheme Airflow connections render
    (SQLAlchemy 2 only knows ``postgresql://``)."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text.removeprefix("postgres://")
    return make_url(text)


def open_engine(url: str | URL, create_dir: bool = False, timeout: float | None = None) -> Engine:
    """A SQLAlchemy engine for ``url``; ``create_dir`` makes a SQLite file's folder.

    ``timeout`` (seconds; None: the drivers' own, unbounded for a PostgreSQL server that
    does not answer): the longest a connection may take to open and a statement to run
    on PostgreSQL, and a SQLite writer is waited for (default 60 s: concurrent tasks share
    the file). For code that must not hang on the database: an alert's record."""
    parsed = sqlalchemy_url(url)
    path = sqlite_file(parsed)
    if path is not None and create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(parsed, connect_args={"timeout": 60 if timeout is None else timeout})
    if timeout is not None and parsed.get_backend_name() == "postgresql":
        # Added to the URL's own options (connect_args would replace them); last, so that
        # it wins over a statement_timeout the URL sets.
        given = parsed.query.get("options", ())
        options = [given] if isinstance(given, str) else list(given)
        options.append(f"-c statement_timeout={round(timeout * 1000)}")
        # libpq counts whole seconds: rounded up, never shorter than asked; a shorter
        # connect_timeout of the URL's own is kept (connect_args would replace it).
        connect = max(1, math.ceil(timeout))
        own = parsed.query.get("connect_timeout")
        if isinstance(own, str) and own.isascii() and own.isdigit() and int(own) > 0:
            connect = min(connect, int(own))
        args = {"connect_timeout": connect, "options": " ".join(options)}
        return create_engine(parsed, connect_args=args)
    return create_engine(parsed)


# --- advisory locks ------------------------------------------------------------------------
INT4 = (-(2**31), 2**31 - 1)
# The two keys, cast: psycopg 3 may send a Python int as int8, and there is no
# pg_advisory_lock(int8, int8).
PAIR = "CAST(:ns AS integer), CAST(:key AS integer)"
#: TCP keepalives of a lock's session, set on the server's side: a holder whose host
#: vanishes (no FIN ever comes) is found dead, and its lock released, within about 2 min
#: (60 s idle, then 6 probes 10 s apart), not after the kernel's default of over 2 hours.
KEEPALIVES = {"tcp_keepalives_idle": "60", "tcp_keepalives_interval": "10",
              "tcp_keepalives_count": "6"}  # fmt: skip


class LockError(RuntimeError):
    """An advisory lock could not be taken, or was lost while it was held: the message
    names the lock, the database (password masked) and the cause."""


@contextmanager
def advisory_lock(engine: Engine, namespace: int, key: int, what: str) -> Iterator[None]:
    """Hold PostgreSQL's exclusive session-level advisory lock ``(namespace, key)`` for the
    block, waiting as long as another session holds it. ``what`` names it in logs and errors.

    The two-int4 key space: PostgreSQL keeps it apart from the single-bigint one that
    Airflow's locks (DBLocks: 1, 2...) and our migration lock use, so no such lock can
    collide with it. The lock lives on a connection of its own, in autocommit (idle, not
    "idle in transaction", while the block runs). That connection is closed at the end,
    never returned to the pool, so no session state outlives the block; if the process
    dies, its connection and the lock die with it (and with its host, by the keepalives).

    Raises LockError when the database cannot be reached, or when the lock's connection
    failed while the block ran (another session may have taken the lock meanwhile; when
    the block itself raised, its error wins and the loss is logged).
    """
    if engine.dialect.name != "postgresql":
        raise ValueError(f"advisory locks need PostgreSQL, not {engine.dialect.name}: {what}")
    for value in (namespace, key):
        if not INT4[0] <= value <= INT4[1]:
            raise ValueError(f"advisory lock key {value} of {what} is not a 32-bit integer")
    where = safe_url(engine.url)
    keys = {"ns": namespace, "key": key}
    started = time.monotonic()
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        raise LockError(f"cannot take {what}: the database at {where} refused: {exc}") from exc
    try:
        settings = ", ".join(f"set_config('{name}', :{name}, false)" for name in KEEPALIVES)
        conn.execute(text(f"SELECT {settings}"), KEEPALIVES)
        if not conn.execute(text(f"SELECT pg_try_advisory_lock({PAIR})"), keys).scalar_one():
            log.info("%s: waiting; held by %s", what, _holder(conn, namespace, key))
            conn.execute(text(f"SELECT pg_advisory_lock({PAIR})"), keys)
    except SQLAlchemyError as exc:
        conn.invalidate()
        conn.close()
        raise LockError(f"cannot take {what} in {where}: {exc}") from exc
    taken = time.monotonic()
    log.info(
        "%s: taken after %.1f s (PostgreSQL advisory lock (%d, %d) in %s)",
        what, taken - started, namespace, key, where,
    )  # fmt: skip
    try:
        yield
    except BaseException:
        log.info(
            "%s: releasing after %.1f s held (the block failed)", what, time.monotonic() - taken
        )
        lost = _release(conn, keys)
        if lost:
            log.error("%s was lost while held (%s), and the block failed", what, lost)
        raise
    # Logged before the unlock: the next holder's "taken" line always comes after it.
    log.info("%s: releasing after %.1f s held", what, time.monotonic() - taken)
    lost = _release(conn, keys)
    if lost:
        raise LockError(
            f"{what} was lost while held: its connection to {where} failed ({lost}), so "
            "another run may have held it meanwhile"
        )


def _release(conn: Connection, keys: dict[str, int]) -> str | None:
    """Unlock and close the lock's connection for good; returns why the lock was no
    longer held (None: released as expected)."""
    try:
        held = conn.execute(text(f"SELECT pg_advisory_unlock({PAIR})"), keys).scalar_one()
        lost = None if held else "the session no longer held it"
    except SQLAlchemyError as exc:
        lost = str(exc).splitlines()[0]
    finally:
        conn.invalidate()  # closed, not pooled: the session and anything it holds end
        conn.close()
    return lost


def _holder(conn: Connection, namespace: int, key: int) -> str:
    """Who holds the lock, for the waiting line: the backend's pid and client address."""
    row = conn.execute(
        text(
            "SELECT a.pid, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid = CAST(CAST(:ns AS integer) AS oid) "
            "AND l.objid = CAST(CAST(:key AS integer) AS oid) AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"ns": namespace, "key": key},
    ).first()
    if row is None:
        return "a session that just released it"
    return f"backend {row.pid} from {row.client_addr or 'a local socket'}"
