"""What production served, in the warehouse: each day's predictions, and their score
once the day's actual delays are known.

Two tables beside the model registry (same database and Alembic history, revision
0005): ``predictions``, one row per flight scheduled for a day as the prediction DAG
served it; ``served_scores``, one row per flight day that ended, written by the nightly
run of that day (:func:`flight_delays.score.run`). Both are replaced whole, per day, in
one transaction, so a rerun leaves exactly one set.

Pure core: :func:`served_score` (the served predictions and the actual delays in, the
MAE of each out). :func:`served_verdict` reads a champion's served history and asks
promotion rule 5 (:func:`flight_delays.model.promotion.served_step_down`) whether it steps
down after the night of a day.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    inspect,
    select,
)

from flight_delays.base import schema
from flight_delays.model import promotion, scoring
from flight_delays.store.config import ScoreSettings
from flight_delays.store.registry import METADATA, Champion

#: A flight as the warehouse names it: its day, then the rest of schema.FLIGHT_KEY.
FLIGHT = ["flight_day", *[c for c in schema.FLIGHT_KEY if c != schema.DAY]]
IDENTITY = [*FLIGHT[:4], "dest", FLIGHT[4]]  # flight_day, carrier, flight, origin, dest, time

PREDICTIONS = Table(
    "predictions",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flight_day", Date, nullable=False),
    Column("carrier", String(8), nullable=False),
    Column("flight", Integer, nullable=False),
    Column("origin", String(8), nullable=False),
    Column("dest", String(8), nullable=False),
    Column("sched_dep_time", Integer, nullable=False),
    Column("predicted_arr_delay", Float, nullable=False),
    Column("baseline_arr_delay", Float, nullable=False),
    Column("champion_kind", String(20), nullable=False),
    Column("champion_day", Date),
    Column("champion_version", Integer, nullable=False),
    Column("model_sha256", String(64)),
    Column("run_id", String(250), nullable=False),
    Column("predicted_at", DateTime(timezone=True), server_default=func.now()),
    UniqueConstraint(*FLIGHT, name="uq_predictions_flight"),
    Index("ix_predictions_flight_day", "flight_day"),
)
SERVED_SCORES = Table(
    "served_scores",
    METADATA,
    Column("flight_day", Date, primary_key=True, autoincrement=False),
    Column("flights", Integer, nullable=False),
    Column("served_mae", Float, nullable=False),
    Column("baseline_mae", Float, nullable=False),
    Column("champion_kind", String(20), nullable=False),
    Column("champion_day", Date),
    Column("model_sha256", String(64)),
    Column("scored_by_run_id", String(250), nullable=False),
    Column("scored_at", DateTime(timezone=True), server_default=func.now()),
)

#: The columns of a day's predictions, as ``served_predictions`` and the table hold them.
PREDICTION_COLUMNS = [c.name for c in PREDICTIONS.columns if c.name not in ("id", "predicted_at")]


# --- pure core --------------------------------------------------------------------------
def served_score(served: pd.DataFrame, actual: pd.DataFrame) -> dict[str, Any] | None:
    """The MAE (minutes) of the ``served`` predictions (:data:`PREDICTION_COLUMNS`) of one
    day against the ``actual`` arrival delays (schema.FLIGHT_KEY + ``arr_delay``; flights
    without one, cancelled or diverted, are left out), and the baseline's on the same
    flights. None when no served flight arrived (nothing was served for the day).

    Raises ValueError when ``served`` holds more than one day or one flight twice."""
    if served.empty:
        return None
    days = served["flight_day"].map(pd.Timestamp).unique()
    if len(days) != 1:
        raise ValueError(f"served predictions of one day expected, got {len(days)} days")
    if served.duplicated(FLIGHT).any():
        raise ValueError("served predictions name a flight twice")
    truth = actual.loc[actual[schema.TARGET].notna(), [*schema.FLIGHT_KEY, schema.TARGET]]
    truth = truth.rename(columns={schema.DAY: "flight_day"}).assign(
        flight_day=lambda f: pd.to_datetime(f["flight_day"]).dt.normalize()
    )
    keyed = served.assign(flight_day=pd.to_datetime(served["flight_day"]).dt.normalize())
    joined = keyed.merge(truth, on=FLIGHT, how="inner", validate="one_to_one")
    if joined.empty:
        return None
    first = joined.iloc[0]
    y = joined[schema.TARGET].to_numpy(dtype=float)
    return {
        "flight_day": pd.Timestamp(days[0]).date(),
        "flights": len(joined),
        "served_mae": scoring.regression_metrics(y, joined["predicted_arr_delay"])["mae"],
        "baseline_mae": scoring.regression_metrics(y, joined["baseline_arr_delay"])["mae"],
        # One champion serves a day's predictions (they are replaced whole).
        "champion_kind": str(first["champion_kind"]),
        "champion_day": None if pd.isna(first["champion_day"]) else first["champion_day"],
        "model_sha256": None if pd.isna(first["model_sha256"]) else first["model_sha256"],
    }


# --- the tables -------------------------------------------------------------------------
def replace_predictions(engine: Engine, day: date, frame: pd.DataFrame) -> int:
    """Make ``frame`` (:data:`PREDICTION_COLUMNS`, every row of ``day``) the day's
    predictions: the day's earlier rows go in the same transaction. Returns the rows."""
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions lack column(s): {', '.join(missing)}")
    if (pd.to_datetime(frame["flight_day"]).dt.date != day).any():
        raise ValueError(f"every prediction must be for {day}")
    rows = [
        {k: (None if _missing(v) else _plain(v)) for k, v in row.items()}
        for row in frame[PREDICTION_COLUMNS].to_dict("records")
    ]
    with engine.begin() as conn:
        conn.execute(delete(PREDICTIONS).where(PREDICTIONS.c.flight_day == day))
        if rows:
            conn.execute(insert(PREDICTIONS), rows)
    return len(rows)


def predictions_of(engine: Engine, day: date) -> pd.DataFrame:
    """The predictions served for ``day`` (:data:`PREDICTION_COLUMNS`; empty if none)."""
    query = select(*(PREDICTIONS.c[c] for c in PREDICTION_COLUMNS)).where(
        PREDICTIONS.c.flight_day == day
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(), columns=PREDICTION_COLUMNS)


def record_served_score(engine: Engine, score: dict[str, Any], run_id: str) -> None:
    """Replace the served score of ``score['flight_day']`` (a nightly rerun of the day
    measures it again)."""
    row = {**score, "scored_by_run_id": run_id}
    with engine.begin() as conn:
        conn.execute(delete(SERVED_SCORES).where(SERVED_SCORES.c.flight_day == row["flight_day"]))
        conn.execute(insert(SERVED_SCORES).values(**row))


def served_scores(engine: Engine) -> pd.DataFrame:
    """Every served score, oldest day first (empty in a registry from before revision
    0005: readers such as the web UI never migrate it)."""
    columns = [c.name for c in SERVED_SCORES.columns]
    if not inspect(engine).has_table(SERVED_SCORES.name):
        return pd.DataFrame(columns=columns)
    query = select(SERVED_SCORES).order_by(SERVED_SCORES.c.flight_day)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)


def champion_history(engine: Engine, model_sha256: str, day: date) -> list[promotion.ServedScore]:
    """The served scores of the days the model ``model_sha256`` served, up to ``day``,
    oldest first (days served by other champions, or by the baseline, are not its)."""
    if not inspect(engine).has_table(SERVED_SCORES.name):
        return []
    c = SERVED_SCORES.c
    query = (
        select(c.flight_day, c.flights, c.served_mae, c.baseline_mae)
        .where(c.model_sha256 == model_sha256, c.champion_kind == "model", c.flight_day <= day)
        .order_by(c.flight_day)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        promotion.ServedScore(
            day=pd.Timestamp(r.flight_day).date(),
            flights=int(r.flights),
            served_mae=float(r.served_mae),
            baseline_mae=float(r.baseline_mae),
        )
        for r in rows
    ]


def served_verdict(
    engine: Engine, champion: Champion, day: date, settings: ScoreSettings
) -> promotion.Decision | None:
    """Rule 5 for the night of ``day``: whether the champion model steps down on its
    served scores (None while the baseline is champion, or for a run of a day no later
    than the champion's own: it served nothing up to then)."""
    if champion.kind != "model" or champion.model_sha256 is None:
        return None
    if champion.processed_day is not None and day <= champion.processed_day:
        return None
    return promotion.served_step_down(
        champion_history(engine, champion.model_sha256, day),
        day,
        margin=settings.served_margin,
        bad_days=settings.served_bad_days,
        days=settings.served_days,
        min_flights=settings.served_min_flights,
        champion_name=promotion.champion_name(champion.processed_day),
    )


def with_served(history: pd.DataFrame, served: pd.DataFrame) -> pd.DataFrame:
    """``history`` (the registry's runs) with ``served_mae``: the served MAE of each
    run's processed day (the predictions served for that day against its actual delays;
    NaN where nothing was served). Rows and their order are kept."""
    by_day = dict(zip(pd.to_datetime(served["flight_day"]), served["served_mae"], strict=True))
    days = pd.to_datetime(history["processed_day"])
    return history.assign(served_mae=[by_day.get(day, np.nan) for day in days])


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


def _plain(value: Any) -> Any:
    """numpy and pandas scalars as the Python values every database driver accepts."""
    if isinstance(value, pd.Timestamp):
        return value.date()
    return value.item() if isinstance(value, np.generic) else value
