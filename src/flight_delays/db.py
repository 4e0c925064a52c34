"""Database connections: URLs (with the ``postgres://`` scheme Airflow renders), their
password-masked form for messages, and engines (a SQLite file's folder made on request).

The warehouse source (:mod:`flight_delays.source`), the demo seed
(:mod:`flight_delays.demo`) and the model registry (:mod:`flight_delays.registry`) all open
their databases here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

#: The Airflow connection that names the warehouse (docker-compose and `make up` define
#: it); without it the package's default applies (FLIGHT_DELAYS_SOURCE_URL, then the
#: embedded SQLite file).
WAREHOUSE_CONN_ID = "flight_delays_warehouse"

log = logging.getLogger(__name__)


def warehouse_url(conn: Any) -> str | None:
    """The warehouse URL from a task context's ``conn`` accessor (Airflow's), or None for
    the package's default. Called when a task runs, so the password never lands in the
    task's rendered fields. The connection wins over ``source.url``/``registry.url`` of
    params.yaml and FLIGHT_DELAYS_SOURCE_URL; the task log says which one is used."""
    connection = conn.get(WAREHOUSE_CONN_ID)
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


def open_engine(url: str | URL, create_dir: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url``; ``create_dir`` makes a SQLite file's folder."""
    parsed = sqlalchemy_url(url)
    path = sqlite_file(parsed)
    if path is not None and create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        # Concurrent tasks share the file: wait for a writer instead of failing at once.
        return create_engine(parsed, connect_args={"timeout": 60})
    return create_engine(parsed)
