"""Unit tests for flight_delays.store.db: URLs, their masked form and engines."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from flight_delays.base.errors import PipelineDataError
from flight_delays.store.db import (
    REQUIRE_CONN_ENV,
    WAREHOUSE_CONN_ID,
    WarehouseConnectionMissingError,
    open_engine,
    safe_url,
    sqlalchemy_url,
    sqlite_file,
    warehouse_url,
)


def test_safe_url_hides_the_password() -> None:
    shown = safe_url("postgresql+psycopg2://etl:s3cret@db:5432/warehouse")
    assert "s3cret" not in shown
    assert shown.startswith("postgresql+psycopg2://etl:") and shown.endswith("@db:5432/warehouse")


def test_airflow_style_postgres_scheme_is_accepted():

    url = sqlalchemy_url("postgres://user:secret@db:5432/warehouse")
    assert url.get_backend_name() == "postgresql"
    assert url.password == "secret"
    assert "secret" not in safe_url("postgres://user:secret@db:5432/warehouse")


def test_sqlite_file_is_the_file_of_a_file_url_only() -> None:
    assert sqlite_file(make_url("sqlite:////data/w.sqlite")) == Path("/data/w.sqlite")
    assert sqlite_file(make_url("sqlite://")) is None
    assert sqlite_file(make_url("sqlite:///:memory:")) is None
    assert sqlite_file(make_url("postgresql://u@db/warehouse")) is None


def test_open_engine_makes_the_sqlite_folder_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "w.sqlite"
    engine = open_engine(f"sqlite:///{path}")
    engine.dispose()
    assert not path.parent.exists()

    engine = open_engine(f"sqlite:///{path}", create_dir=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
    assert path.exists()


class _Conn:
    """Airflow's task-context ``conn`` accessor: ``get`` returns a connection or None."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri

    def get(self, conn_id: str):
        assert conn_id == WAREHOUSE_CONN_ID
        if self.uri is None:
            return None
        uri = self.uri
        return type("Connection", (), {"get_uri": lambda self: uri})()


def test_the_warehouse_connection_wins_and_the_log_says_so_without_the_password(caplog):
    caplog.set_level(logging.INFO, logger="flight_delays.store.db")
    url = "postgres://owner:s3cret@db:5432/warehouse"
    assert warehouse_url(_Conn(url)) == url
    assert "overrides source.url" in caplog.text and WAREHOUSE_CONN_ID in caplog.text
    assert "s3cret" not in caplog.text


def test_without_the_connection_the_log_names_the_params_and_the_variable(caplog, monkeypatch):
    monkeypatch.delenv(REQUIRE_CONN_ENV, raising=False)
    caplog.set_level(logging.INFO, logger="flight_delays.store.db")
    assert warehouse_url(_Conn(None)) is None
    assert "source.url" in caplog.text and "FLIGHT_DELAYS_SOURCE_URL" in caplog.text


def test_a_deployment_that_defines_the_connection_never_falls_back_to_another_warehouse(
    monkeypatch,
):
    # Airflow's accessor answers None both when the connection is not defined and when its
    # lookup failed (the metastore restarting): the compose stack then read the embedded
    # SQLite file. With the deployment's flag the task fails (and is retried) instead.
    monkeypatch.setenv(REQUIRE_CONN_ENV, "true")
    with pytest.raises(WarehouseConnectionMissingError) as raised:
        warehouse_url(_Conn(None))
    assert WAREHOUSE_CONN_ID in str(raised.value) and REQUIRE_CONN_ENV in str(raised.value)
    url = "postgres://owner:s3cret@db:5432/warehouse"
    assert warehouse_url(_Conn(url)) == url  # the connection, once had, is used


def test_airflow_reads_a_failed_lookup_as_not_defined_which_the_flag_turns_into_a_retry(
    monkeypatch,
):
    # The flag's premise, on the installed Airflow: through the task context's accessor, a
    # secrets backend that fails (the metastore restarting) reads as "not defined".
    # The unit tests also run where Airflow is not installed (CI's Python 3.13).
    context = pytest.importorskip("airflow.sdk.execution_time.context")
    supervisor = pytest.importorskip("airflow.sdk.execution_time.supervisor")

    asked = []

    class Down:
        def get_connection(self, conn_id, team_name=None):
            asked.append(conn_id)
            raise ConnectionError("the metastore is restarting")

    monkeypatch.setattr(supervisor, "ensure_secrets_backend_loaded", lambda: [Down()])
    accessor = context.ConnectionAccessor()
    assert accessor.get(WAREHOUSE_CONN_ID) is None
    assert asked == [WAREHOUSE_CONN_ID]  # the failing backend was asked, and its error lost
    monkeypatch.setenv(REQUIRE_CONN_ENV, "true")
    with pytest.raises(WarehouseConnectionMissingError):
        warehouse_url(accessor)


@pytest.mark.parametrize("value", ["", "0", "false", "No"])
def test_without_the_flag_the_package_default_applies(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_CONN_ENV, value)
    assert warehouse_url(_Conn(None)) is None


def test_a_flag_that_is_neither_true_nor_false_is_refused_by_name(monkeypatch):
    # A settings error: it fails the task at once (PipelineDataError), connection or not.
    monkeypatch.setenv(REQUIRE_CONN_ENV, "required")
    for uri in (None, "postgres://owner@db/warehouse"):
        with pytest.raises(PipelineDataError, match=f"{REQUIRE_CONN_ENV}='required'"):
            warehouse_url(_Conn(uri))


def test_a_timeout_bounds_the_connection_to_a_server_that_never_answers() -> None:
    # A PostgreSQL host that accepts the TCP connection and then says nothing (a hung
    # server): without a timeout libpq waits for ever; an alert's record must not.
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        engine = open_engine(f"postgresql+psycopg://u:p@127.0.0.1:{port}/registry", timeout=1)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
        assert time.monotonic() - started < 8
        engine.dispose()
    # On SQLite the timeout is the busy timeout: how long a writer is waited for.
    for timeout, busy_ms in ((2.5, 2500), (None, 60_000)):
        sqlite = open_engine("sqlite://", timeout=timeout)
        with sqlite.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == busy_ms
        sqlite.dispose()


def sent_to_the_driver(url: str, timeout: float) -> dict:
    """The parameters ``open_engine(url, timeout=timeout)`` hands the driver; stops before
    the network."""
    sent = {}

    class NotConnected(Exception):
        pass

    def capture(dialect, record, cargs, cparams):
        sent.update(cparams)
        raise NotConnected

    engine = open_engine(url, timeout=timeout)
    event.listen(engine, "do_connect", capture)
    with pytest.raises(NotConnected):
        engine.connect()
    engine.dispose()
    return sent


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg"])
def test_a_timeout_keeps_the_options_of_the_url(driver: str) -> None:
    # A URL may set its own server options (a schema's search_path); the statement
    # timeout is added to them, not put in their place.
    given = "-c search_path=foo"
    sent = sent_to_the_driver(f"{driver}://u:p@127.0.0.1:1/registry?options={quote(given)}", 2.5)
    assert sent["options"] == f"{given} -c statement_timeout=2500"
    assert sent["connect_timeout"] == 3  # whole seconds, never shorter than asked
    assert sent["dbname"] == "registry"  # the rest of the URL is still used


@pytest.mark.parametrize(("own", "expected"), [("1", 1), ("30", 3), ("0", 3), ("x", 3)])
def test_a_shorter_connect_timeout_of_the_url_is_kept(own: str, expected: int) -> None:
    url = f"postgresql+psycopg://u:p@127.0.0.1:1/registry?connect_timeout={own}"
    assert sent_to_the_driver(url, 2.5)["connect_timeout"] == expected
