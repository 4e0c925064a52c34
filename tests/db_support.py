"""A check both stacks' live tests share: the Model reports page's warehouse role reads
the registry and can change nothing."""

from __future__ import annotations

import pytest
import sqlalchemy

# What the page's role must never be able to do: delete, update, create.
WRITES = (
    "delete from model_runs",
    "update champion set version = version + 1",
    "create table planted (x int)",
)


def assert_select_only(url: str) -> None:
    """The role of ``url`` reads the registry's runs (at least one) and every write in
    WRITES is refused with "permission denied"."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as db:
            assert db.execute(sqlalchemy.text("select count(*) from model_runs")).scalar() >= 1
        for sql in WRITES:
            with engine.connect() as db, pytest.raises(sqlalchemy.exc.ProgrammingError) as err:
                db.execute(sqlalchemy.text(sql))
            assert "permission denied" in str(err.value), sql
    finally:
        engine.dispose()
