"""Unit tests for flight_delays.db: URLs, their masked form and engines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from flight_delays.db import open_engine, safe_url, sqlalchemy_url, sqlite_file


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
