"""Where things live: the artifact catalog, settings, atomic files, storage by URL,
database connections, and the model registry with its Alembic migrations."""
