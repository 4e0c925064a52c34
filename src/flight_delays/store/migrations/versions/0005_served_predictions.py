"""What production served: the predictions of each flight day, and their score.

- predictions: one row per flight scheduled for a day, as the prediction DAG served it
  (the champion's predicted arrival delay in minutes, the baseline's beside it, and
  which champion made it). Replaced as a whole, per day, in one transaction: a rerun of
  a day's predictions leaves one set.
- served_scores: for each flight day that ended, the MAE of the served predictions
  against the actual arrival delays, and the baseline's on the same flights: the number
  production delivered, as opposed to the holdout's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flight_day", sa.Date, nullable=False),
        sa.Column("carrier", sa.String(8), nullable=False),
        sa.Column("flight", sa.Integer, nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("dest", sa.String(8), nullable=False),
        sa.Column("sched_dep_time", sa.Integer, nullable=False),
        sa.Column("predicted_arr_delay", sa.Float, nullable=False),
        sa.Column("baseline_arr_delay", sa.Float, nullable=False),
        sa.Column("champion_kind", sa.String(20), nullable=False),
        sa.Column("champion_day", sa.Date),
        sa.Column("champion_version", sa.Integer, nullable=False),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.UniqueConstraint(
            "flight_day", "carrier", "flight", "origin", "sched_dep_time",
            name="uq_predictions_flight",
        ),
    )  # fmt: skip
    op.create_index("ix_predictions_flight_day", "predictions", ["flight_day"])
    op.create_table(
        "served_scores",
        sa.Column("flight_day", sa.Date, primary_key=True, autoincrement=False),
        sa.Column("flights", sa.Integer, nullable=False),
        sa.Column("served_mae", sa.Float, nullable=False),
        sa.Column("baseline_mae", sa.Float, nullable=False),
        sa.Column("champion_kind", sa.String(20), nullable=False),
        sa.Column("champion_day", sa.Date),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("scored_by_run_id", sa.String(250), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("served_scores")
    op.drop_index("ix_predictions_flight_day", table_name="predictions")
    op.drop_table("predictions")
