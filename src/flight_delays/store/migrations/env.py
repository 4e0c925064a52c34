"""Alembic environment for the model registry. Run through flight_delays.store.registry
(`python -m flight_delays.store.registry upgrade --url URL`), which passes the connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from flight_delays.store.registry import METADATA, VERSION_TABLE

# Any fixed number: the advisory lock that keeps two PostgreSQL migrators apart.
PG_LOCK_KEY = 0x6664_7265  # "fdre"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=METADATA,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE support on SQLite
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    context.run_migrations()
