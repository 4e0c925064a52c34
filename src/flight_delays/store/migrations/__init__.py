"""Alembic migrations of the model registry schema (see flight_delays.store.registry)."""
