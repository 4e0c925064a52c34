"""The model registry: the challenger each run trained, one row per scored run, and a
pointer to the current champion, in a SQL database reached through SQLAlchemy (the
warehouse: the embedded SQLite file, or the `warehouse` database on PostgreSQL under
docker-compose and `make up`).

The schema is created and migrated by Alembic (flight_delays/store/migrations), never by hand:
``python -m flight_delays.store.registry upgrade [--url URL]``; the score step also upgrades
an empty database on first use.

Promotion is one transaction that first locks the single champion row (a no-op UPDATE:
a row lock on PostgreSQL, the database write lock on SQLite), so concurrent runs of a
backfill are serialised there: none can lose a row, leave two champions, or promote a
model over one it was not compared with (the champion's ``version`` must still be the
one the challenger was scored against, else the caller re-scores against the new one).

Exactly one row per run: ``model_runs`` has a unique key on (processed_day, run_id), and
:func:`record_run` returns the run's existing row instead of adding one, so a retried
score task rewrites nothing. A re-run of a day is a new run (its own run_id) and gets
its own row; the earlier run's row and decision stay as they were.

The train task records its model's and model card's SHA-256 in ``challengers`` (one row
per run), outside the model folder: score checks the files it loads against it, so
whoever can edit the model folder cannot swap the model.

Runs of the same processed day take the day lock (:func:`day_lock`) around their scoring
and publishing: a PostgreSQL advisory lock keyed by the day, so it orders them on any
worker or host that reaches the registry.

Promoted models are copied into a content-addressed store, ``models/registry/<sha256>.skops``,
written once: a rerun that retrains a ``run_model`` cannot change a champion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from typing import Any

import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from flight_delays.base.dates import parse_day
from flight_delays.store import artifacts, io, storage
from flight_delays.store.db import advisory_lock, open_engine, safe_url, sqlite_file
from flight_delays.store.storage import ArtifactPath

log = logging.getLogger(__name__)

VERSION_TABLE = "flight_delays_registry_version"
#: The day lock's first key (PostgreSQL's two-key advisory locks: this, then the day's
#: ordinal). Any fixed number: "fday" in ASCII. The migration lock (a single bigint key,
#: migrations/env.py) and Airflow's (1, 2...) live in the other key space.
DAY_LOCK_NAMESPACE = 0x6664_6179
METADATA = MetaData()

# Mirrors migrations/versions/: the tables the queries below use. A test checks that
# the migrated database and these definitions agree.
MODEL_RUNS = Table(
    "model_runs",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("processed_day", Date, nullable=False, index=True),
    Column("run_id", String(250)),
    Column("window_start", Date, nullable=False),
    Column("window_end", Date, nullable=False),
    Column("holdout_start", Date, nullable=False),
    Column("holdout_end", Date, nullable=False),
    Column("holdout_rows", Integer, nullable=False),
    Column("model_path", String(1000), nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("challenger_mae", Float, nullable=False),
    Column("champion_mae", Float, nullable=False),
    Column("baseline_mae", Float, nullable=False),
    Column("champion_kind", String(20), nullable=False),
    Column("champion_day", Date),
    Column("metrics_json", Text, nullable=False),
    Column("decision", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    # The ``metrics`` payload as recorded (NULL in rows from before revision 0002).
    Column("report_json", Text),
    CheckConstraint(
        "decision IN ('promoted', 'kept', 'stepped down')", name="ck_model_runs_decision"
    ),
    Index("uq_model_runs_day_run", "processed_day", "run_id", unique=True),
)
CHALLENGERS = Table(
    "challengers",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("processed_day", Date, nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("model_path", String(1000), nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("card_path", String(1000), nullable=False),
    Column("card_sha256", String(64), nullable=False),
    Column("train_rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    UniqueConstraint("processed_day", "run_id", name="uq_challengers_day_run"),
)
CHAMPION = Table(
    "champion",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("run_pk", Integer, ForeignKey("model_runs.id")),
    Column("processed_day", Date),
    Column("model_path", String(1000)),
    Column("model_sha256", String(64)),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), server_default=func.now()),
    CheckConstraint("id = 1", name="ck_champion_single_row"),
)


CHAMPION_MOVES = Table(
    "champion_moves",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("run_pk", Integer, ForeignKey("model_runs.id")),  # NULL: the baseline
    Column("previous_run_pk", Integer, ForeignKey("model_runs.id")),
    Column("reason", Text, nullable=False),
    Column("moved_at", DateTime(timezone=True), server_default=func.now()),
    CheckConstraint(
        "kind IN ('promotion', 'rollback', 'step_down')", name="ck_champion_moves_kind"
    ),
)


DRIFT_SCORES = Table(
    "drift_scores",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("processed_day", Date, nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("feature", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("psi", Float),  # NULL: too few flights to measure (drift.min_rows)
    Column("threshold", Float),  # the alert threshold; NULL: measured only, not judged
    Column("flagged", Boolean, nullable=False),
    Column("day_rows", Integer, nullable=False),
    Column("window_rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    UniqueConstraint("processed_day", "run_id", "feature", name="uq_drift_scores_run_feature"),
    CheckConstraint("kind IN ('numeric', 'categorical')", name="ck_drift_scores_kind"),
    Index("ix_drift_scores_processed_day", "processed_day"),
)
#: The columns a run's drift rows carry (flight_delays.monitor.drift.COLUMNS), as stored.
DRIFT_COLUMNS = ["feature", "kind", "psi", "threshold", "flagged", "day_rows", "window_rows"]


class RegistryError(RuntimeError):
    """The registry database is unreachable, unmigrated or inconsistent."""


@dataclass(frozen=True)
class Champion:
    """The model production serves: the naive baseline until a model beats it.

    ``processed_day``: the day the model was trained for; for the baseline, the day of
    the run that made it champion again by a step-down (None at the start or after a
    rollback)."""

    version: int
    processed_day: date | None = None
    model_path: str | None = None
    model_sha256: str | None = None

    run_id: str | None = None  # the run that promoted it

    @property
    def kind(self) -> str:
        return "baseline" if self.model_sha256 is None else "model"


@dataclass(frozen=True)
class Challenger:
    """What one run's train task wrote for ``processed_day``: the model and its card,
    with the SHA-256 of each as train computed them from the bytes it wrote."""

    processed_day: date
    run_id: str
    model_path: str
    model_sha256: str
    card_path: str
    card_sha256: str
    train_rows: int


# --- schema ------------------------------------------------------------------------------
def _alembic_config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("flight_delays.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(None))
    return str(script.get_current_head())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine) -> str:
    """Migrate the registry schema to the newest revision; returns it. Idempotent, and
    safe when the first runs of a backfill migrate at once: PostgreSQL migrators take an
    advisory lock (migrations/env.py); SQLite ones a lock on the database's folder
    (SQLite runs each DDL statement in its own transaction, so a second migrator would
    otherwise find half the tables of the first)."""
    head = head_revision()
    if current_revision(engine) == head:
        return head
    with _migration_lock(engine):
        if current_revision(engine) != head:  # another migrator may have finished it
            with engine.begin() as conn:
                command.upgrade(_alembic_config(conn), "head")
    log.info("registry schema at revision %s in %s", head, safe_url(engine.url))
    return head


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """For a SQLite file, an exclusive lock on the folder that holds it (no lock file is
    left behind); nothing for other databases (they lock inside the migration)."""
    path = sqlite_file(engine.url)
    if path is None:
        yield
        return
    with storage.lock(path.resolve().parent):
        yield


def connect(url: str, timeout: float | None = None) -> Engine:
    """An engine for the registry at ``url``, its schema migrated to the newest revision;
    ``timeout``: :func:`flight_delays.store.db.open_engine`'s."""
    engine = open_engine(url, create_dir=True, timeout=timeout)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise RegistryError(f"cannot open the model registry at {safe_url(url)}: {exc}") from exc
    return engine


def day_lock_key(day: date) -> tuple[int, int]:
    """The day lock's two advisory-lock keys: the namespace and the day's proleptic
    Gregorian ordinal (2013-03-27: 734954), the same on every host."""
    return DAY_LOCK_NAMESPACE, day.toordinal()


def day_lock_waiters(engine: Engine, day: date) -> int:
    """How many sessions wait (not granted) for the day lock of ``day``: a score queued
    behind another run of the same day. PostgreSQL only (pg_locks)."""
    namespace, key = day_lock_key(day)
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = CAST(:ns AS oid) AND objid = CAST(:key AS oid) AND objsubid = 2"
    )
    with engine.connect() as conn:
        return conn.execute(query, {"ns": namespace, "key": key}).scalar_one()


@contextmanager
def day_lock(engine: Engine, day: date) -> Iterator[None]:
    """Hold the lock of processed ``day`` in the registry's PostgreSQL database for the
    block: one holder at a time, whatever process, worker or host it runs on; a holder
    that dies releases it (:func:`flight_delays.store.db.advisory_lock`). Raises
    flight_delays.store.db.LockError when the database cannot be reached or the lock is lost,
    and ValueError for a registry that is not on PostgreSQL."""
    with advisory_lock(engine, *day_lock_key(day), what=f"the day lock of {day.isoformat()}"):
        yield


# --- reads -------------------------------------------------------------------------------
def current_champion(engine: Engine) -> Champion:
    query = (
        select(CHAMPION, MODEL_RUNS.c.run_id)
        .outerjoin(MODEL_RUNS, MODEL_RUNS.c.id == CHAMPION.c.run_pk)
        .where(CHAMPION.c.id == 1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise RegistryError("the champion row is missing: the registry was edited by hand")
    return Champion(
        version=row["version"],
        processed_day=row["processed_day"],
        model_path=row["model_path"],
        model_sha256=row["model_sha256"],
        run_id=row["run_id"],
    )


def recorded_run(engine: Engine, day: date, run_id: str) -> dict[str, Any] | None:
    """The model_runs row of run ``run_id`` for ``day``, or None if it has none yet."""
    query = select(MODEL_RUNS).where(
        MODEL_RUNS.c.processed_day == day, MODEL_RUNS.c.run_id == run_id
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def run_ids_of_day(engine: Engine, day: date) -> list[str]:
    """The run ids of every run recorded for ``day`` (score's row: the day's champion
    decision is made), newest first."""
    query = (
        select(MODEL_RUNS.c.run_id)
        .where(MODEL_RUNS.c.processed_day == day)
        .order_by(MODEL_RUNS.c.id.desc())
    )
    with engine.connect() as conn:
        return [str(run_id) for run_id in conn.execute(query).scalars()]


def find_challenger(engine: Engine, day: date, run_id: str) -> Challenger | None:
    """The challenger run ``run_id`` trained for ``day``; if that run trained none (a
    task run alone, as ``airflow tasks test`` does: each call is a run of its own), the
    one trained last for ``day``; None if no run trained for ``day``."""
    columns = [c for c in CHALLENGERS.c if c.name not in ("id", "created_at")]
    base = select(*columns).where(CHALLENGERS.c.processed_day == day)
    with engine.connect() as conn:
        row = conn.execute(base.where(CHALLENGERS.c.run_id == run_id)).mappings().first()
        if row is None:
            row = conn.execute(base.order_by(CHALLENGERS.c.id.desc()).limit(1)).mappings().first()
    return Challenger(**row) if row is not None else None


def history(engine: Engine, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every recorded run, oldest processed day first (ties: recording order): all its
    columns, or only ``columns`` (a reader polled often, such as the metrics route, leaves
    the JSON payloads out: they are most of a row)."""
    chosen = list(MODEL_RUNS.c) if columns is None else [MODEL_RUNS.c[c] for c in columns]
    query = select(*chosen).order_by(MODEL_RUNS.c.processed_day, MODEL_RUNS.c.id)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return pd.DataFrame(rows, columns=[c.key for c in chosen])


# --- writes ------------------------------------------------------------------------------
def store_model(
    model_path: str | ArtifactPath, sha256: str, root: str | ArtifactPath
) -> ArtifactPath:
    """Copy a model into the content-addressed store under the artifact ``root`` (once:
    ``stored_model``) and return its path there. The bytes are read once and checked
    before they are written (local or object store)."""
    final = artifacts.STORED_MODEL.path(root, sha256=sha256)
    if final.exists() and io.sha256(final) == sha256:
        return final
    data = io.read_bytes(model_path, artifacts.RUN_MODEL)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RegistryError(f"model {model_path} changed while it was being stored")
    return io.write_bytes(data, final)


def model_file(
    model_path: str, sha256: str, root: str | ArtifactPath | None = None
) -> ArtifactPath:
    """Where to read a promoted model: the content-addressed store under the artifact
    ``root`` (``stored_model``, named by the SHA-256) when the file is there, else
    ``model_path`` as the registry recorded it. The recorded path is where the model was
    stored then: a project restored or moved to another folder, or mounted at another
    path (the compose containers' /opt/airflow), finds its models by their hash. The
    loaders check the hash either way."""
    if root is not None:
        stored = artifacts.STORED_MODEL.path(root, sha256=sha256)
        if stored.exists():
            return stored
    return storage.locate(model_path)


def record_challenger(engine: Engine, challenger: Challenger) -> None:
    """Record what a run's train task wrote. A retried train task of the same run
    replaces its own record (it wrote the files again); other runs' records stay."""
    key = (CHALLENGERS.c.processed_day == challenger.processed_day) & (
        CHALLENGERS.c.run_id == challenger.run_id
    )
    with engine.begin() as conn:
        conn.execute(delete(CHALLENGERS).where(key))
        conn.execute(insert(CHALLENGERS).values(**vars(challenger)))


def record_run(
    engine: Engine,
    run: dict[str, Any],
    promote: bool,
    expected_version: int,
    *,
    step_down: bool = False,
) -> int | None:
    """Insert ``run`` (a model_runs row without id) and, if ``promote``, make it champion;
    if ``step_down``, make the baseline champion again (the champion model decayed).

    One transaction, entered by locking the champion row. Returns the new row's id; the
    id of the row already recorded for the run (same processed_day and run_id) without
    writing anything; or None without writing anything when the champion changed since
    the caller read version ``expected_version`` (the caller must then score against the
    new champion).
    """
    with engine.begin() as conn:
        # The lock: a no-op UPDATE of the one champion row.
        conn.execute(update(CHAMPION).where(CHAMPION.c.id == 1).values(version=CHAMPION.c.version))
        existing = conn.execute(
            select(MODEL_RUNS.c.id).where(
                MODEL_RUNS.c.processed_day == run["processed_day"],
                MODEL_RUNS.c.run_id == run["run_id"],
            )
        ).scalar_one_or_none()
        if existing is not None:
            return int(existing)
        version = conn.execute(select(CHAMPION.c.version).where(CHAMPION.c.id == 1)).scalar_one()
        if version != expected_version:
            return None
        if promote and step_down:
            raise ValueError("a run cannot both promote its challenger and step down")
        previous = conn.execute(select(CHAMPION.c.run_pk).where(CHAMPION.c.id == 1)).scalar_one()
        if step_down and previous is None:
            raise RegistryError("the baseline is the champion: there is no model to step down")
        run_pk = conn.execute(insert(MODEL_RUNS).values(**run)).inserted_primary_key[0]
        if promote or step_down:
            # The new champion: this run's model; or the baseline, with the day of the
            # run that made it champion again (no model may come back from before it).
            model = run if promote else {"model_path": None, "model_sha256": None}
            values = {
                "run_pk": run_pk if promote else None,
                "processed_day": run["processed_day"],
                "model_path": model["model_path"],
                "model_sha256": model["model_sha256"],
            }
            conn.execute(
                insert(CHAMPION_MOVES).values(
                    kind="promotion" if promote else "step_down",
                    run_pk=values["run_pk"],
                    previous_run_pk=previous,
                    reason=run["reason"],
                )
            )
            conn.execute(
                update(CHAMPION)
                .where(CHAMPION.c.id == 1)
                .values(**values, version=CHAMPION.c.version + 1, updated_at=func.now())
            )
    return int(run_pk)


def record_drift(engine: Engine, day: date, run_id: str, scores: pd.DataFrame) -> int:
    """Make ``scores`` (:data:`DRIFT_COLUMNS`, one row per feature: flight_delays.monitor.drift.
    compute) the drift rows of run ``run_id`` for ``day``, replacing the run's earlier
    ones in the same transaction (a retried score task leaves one set). Returns the
    rows written."""
    missing = [c for c in DRIFT_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"drift scores lack column(s): {', '.join(missing)}")
    rows = [
        {
            "processed_day": day,
            "run_id": run_id,
            "feature": str(row["feature"]),
            "kind": str(row["kind"]),
            "psi": None if pd.isna(row["psi"]) else float(row["psi"]),
            "threshold": None if pd.isna(row["threshold"]) else float(row["threshold"]),
            "flagged": bool(row["flagged"]),
            "day_rows": int(row["day_rows"]),
            "window_rows": int(row["window_rows"]),
        }
        for row in scores[DRIFT_COLUMNS].to_dict("records")
    ]
    key = (DRIFT_SCORES.c.processed_day == day) & (DRIFT_SCORES.c.run_id == run_id)
    with engine.begin() as conn:
        conn.execute(delete(DRIFT_SCORES).where(key))
        if rows:
            conn.execute(insert(DRIFT_SCORES), rows)
    return len(rows)


def drift_scores(
    engine: Engine, day: date | None = None, run_id: str | None = None
) -> pd.DataFrame:
    """The drift rows of one run, largest PSI first (unmeasured last): run ``run_id`` of
    ``day``; without ``run_id``, the run of ``day`` recorded last; without ``day``, the
    newest processed day's. Columns: processed_day, run_id and :data:`DRIFT_COLUMNS`.
    Empty when there is none, or in a registry from before revision 0006_drift (readers
    such as the web UI never migrate it)."""
    columns = ["processed_day", "run_id", *DRIFT_COLUMNS]
    if not inspect(engine).has_table(DRIFT_SCORES.name):
        return pd.DataFrame(columns=columns)
    with engine.connect() as conn:
        if day is None:
            day = conn.execute(select(func.max(DRIFT_SCORES.c.processed_day))).scalar_one()
        if day is not None and run_id is None:
            run_id = conn.execute(
                select(DRIFT_SCORES.c.run_id)
                .where(DRIFT_SCORES.c.processed_day == day)
                .order_by(DRIFT_SCORES.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        query = (
            select(*(DRIFT_SCORES.c[c] for c in columns))
            .where(DRIFT_SCORES.c.processed_day == day, DRIFT_SCORES.c.run_id == run_id)
            .order_by(DRIFT_SCORES.c.psi.is_(None), DRIFT_SCORES.c.psi.desc(), DRIFT_SCORES.c.id)
        )
        return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)


def champion_moves(engine: Engine) -> pd.DataFrame:
    """Every change of the champion, oldest first: kind, the run that became champion
    (its day; NULL: the baseline), the run it replaced, the reason and when."""
    new, old = MODEL_RUNS.alias("new"), MODEL_RUNS.alias("old")
    query = (
        select(
            CHAMPION_MOVES.c.id,
            CHAMPION_MOVES.c.kind,
            new.c.processed_day.label("champion_day"),
            new.c.run_id.label("champion_run_id"),
            old.c.processed_day.label("previous_day"),
            CHAMPION_MOVES.c.reason,
            CHAMPION_MOVES.c.moved_at,
        )
        .outerjoin(new, new.c.id == CHAMPION_MOVES.c.run_pk)
        .outerjoin(old, old.c.id == CHAMPION_MOVES.c.previous_run_pk)
        .order_by(CHAMPION_MOVES.c.id)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all())


def rollback(
    engine: Engine,
    reason: str,
    to_day: date | None = None,
    baseline: bool = False,
    root: str | ArtifactPath | None = None,
) -> Champion:
    """Make an earlier champion the champion again, recording the move and ``reason``.

    Target: the baseline (``baseline``); else the newest promoted run of ``to_day``;
    else the champion before the current one (the current one's recorded predecessor,
    or for promotions made before revision 0003, the newest promoted run before it).
    The target's stored model must still match its recorded SHA-256. One transaction
    under the champion lock, which also bumps the version, so a score running meanwhile
    scores again against the restored champion.
    """
    if not reason.strip():
        raise RegistryError("a rollback needs a reason (it is recorded with the move)")
    with engine.begin() as conn:
        conn.execute(update(CHAMPION).where(CHAMPION.c.id == 1).values(version=CHAMPION.c.version))
        current, since = conn.execute(
            select(CHAMPION.c.run_pk, CHAMPION.c.processed_day).where(CHAMPION.c.id == 1)
        ).one()
        target = None if baseline else _rollback_target(conn, current, to_day)
        values: dict[str, Any] = {"run_pk": None, "processed_day": None}
        values.update(model_path=None, model_sha256=None)
        if target is not None:
            run = conn.execute(select(MODEL_RUNS).where(MODEL_RUNS.c.id == target)).mappings().one()
            path = model_file(run["model_path"], run["model_sha256"], root)
            if not path.is_file() or io.sha256(path) != run["model_sha256"]:
                raise RegistryError(
                    f"cannot roll back to the model of {run['processed_day']}: {path} is missing "
                    "or differs from its recorded SHA-256"
                )
            values = {
                "run_pk": target,
                "processed_day": run["processed_day"],
                "model_path": run["model_path"],
                "model_sha256": run["model_sha256"],
            }
        # The baseline since a step-down may be rolled back to the plain baseline: it
        # lifts the step-down's day (promotion rule 1 for older days).
        if values["run_pk"] == current and not (current is None and since is not None):
            raise RegistryError("that model is already the champion: nothing to roll back")
        conn.execute(
            update(CHAMPION)
            .where(CHAMPION.c.id == 1)
            .values(**values, version=CHAMPION.c.version + 1, updated_at=func.now())
        )
        conn.execute(
            insert(CHAMPION_MOVES).values(
                kind="rollback", run_pk=values["run_pk"], previous_run_pk=current, reason=reason
            )
        )
    champion = current_champion(engine)
    log.info("rolled back the champion to %s: %s", champion.processed_day or "the baseline", reason)
    return champion


def _rollback_target(conn: Any, current: int | None, to_day: date | None) -> int | None:
    promoted = select(MODEL_RUNS.c.id).where(MODEL_RUNS.c.decision == "promoted")
    if to_day is not None:
        target = conn.execute(
            promoted.where(MODEL_RUNS.c.processed_day == to_day).order_by(MODEL_RUNS.c.id.desc())
        ).first()
        if target is None:
            raise RegistryError(f"no promoted run for {to_day}: nothing to roll back to")
        return int(target[0])
    if current is None:
        raise RegistryError("the baseline is the champion: there is no earlier champion")
    # The champion before the current one: the one its promotion replaced. Not a rollback
    # that made it champion again: a second rollback would return to the model the first
    # one rolled back from, instead of going one further back.
    move = conn.execute(
        select(CHAMPION_MOVES.c.previous_run_pk)
        .where(CHAMPION_MOVES.c.run_pk == current, CHAMPION_MOVES.c.kind != "rollback")
        .order_by(CHAMPION_MOVES.c.id.desc())
    ).first()
    if move is not None:
        return move[0]
    earlier = conn.execute(
        promoted.where(MODEL_RUNS.c.id < current).order_by(MODEL_RUNS.c.id.desc())
    ).first()
    return int(earlier[0]) if earlier else None


def metrics_of(row: dict[str, Any]) -> dict[str, Any]:
    """The metrics dict stored with a run."""
    return json.loads(row["metrics_json"])


# --- command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from flight_delays.store.config import load_settings, project_paths

    parser = argparse.ArgumentParser(description="The flight_delays model registry.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        ("upgrade", "migrate the schema"),
        ("show", "print the runs and the champion's moves"),
        ("rollback", "make the previous champion (or --to DAY, or --to baseline) champion"),
    )
    for name, about in commands:
        cmd = sub.add_parser(name, help=about)
        cmd.add_argument(
            "--url",
            help=(
                "registry URL (default: registry.url of params.yaml, else the warehouse: "
                "source.url, else FLIGHT_DELAYS_SOURCE_URL, else the embedded SQLite file; "
                "the Airflow connection flight_delays_warehouse is not read here)"
            ),
        )
        if name == "rollback":
            cmd.add_argument("--to", help="YYYY-MM-DD (its newest promoted run) or 'baseline'")
            cmd.add_argument("--reason", required=True, help="recorded with the move")
    args = parser.parse_args(argv)
    to_day = None
    if args.command == "rollback" and args.to and args.to != "baseline":
        try:
            to_day = parse_day(args.to)
        except ValueError:
            parser.error(f"--to: expected a day YYYY-MM-DD or 'baseline', got {args.to!r}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    url = args.url or load_settings().registry_url
    try:
        engine = connect(url)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.command == "show":
        champion = current_champion(engine)
        print(f"champion: {champion.kind} {champion.processed_day or ''}".rstrip())
        columns = ["processed_day", "challenger_mae", "champion_mae", "baseline_mae", "decision"]
        runs = history(engine, [*columns, "reason"])
        # The reason last and whole: a run kept although its challenger beat the champion
        # says why (a newer champion, the baseline's bound, the margin).
        print(runs.to_string(index=False, justify="left", float_format=lambda v: f"{v:.2f}"))
        moves = champion_moves(engine)
        if not moves.empty:
            print("champion moves:")
            print(moves.drop(columns="id").to_string(index=False))
    if args.command == "rollback":
        try:
            champion = rollback(
                engine,
                args.reason,
                to_day=to_day,
                baseline=args.to == "baseline",
                root=project_paths().root,  # the artifact root the models are stored under
            )
        except RegistryError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        print(f"champion: {champion.kind} {champion.processed_day or ''}".rstrip())
        # A command outside Airflow: no champion event starts a prediction run.
        print(
            "the prediction DAG serves it from its next run (05:00 New York time); to "
            "serve it now: airflow dags trigger flight_delays_predict --conf "
            '\'{"day": "YYYY-MM-DD"}\''
        )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
