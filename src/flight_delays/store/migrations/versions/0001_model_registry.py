"""Model registry: one row per scored run, and the champion pointer.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("processed_day", sa.Date, nullable=False, index=True),
        sa.Column("run_id", sa.String(250)),
        sa.Column("window_start", sa.Date, nullable=False),
        sa.Column("window_end", sa.Date, nullable=False),
        sa.Column("holdout_start", sa.Date, nullable=False),
        sa.Column("holdout_end", sa.Date, nullable=False),
        sa.Column("holdout_rows", sa.Integer, nullable=False),
        sa.Column("model_path", sa.String(1000), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("challenger_mae", sa.Float, nullable=False),
        sa.Column("champion_mae", sa.Float, nullable=False),
        sa.Column("baseline_mae", sa.Float, nullable=False),
        sa.Column("champion_kind", sa.String(20), nullable=False),
        sa.Column("champion_day", sa.Date),
        sa.Column("metrics_json", sa.Text, nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("decision IN ('promoted', 'kept')", name="ck_model_runs_decision"),
    )
    op.create_table(
        "champion",
        # Exactly one row (id = 1): every promotion locks it first, which serialises
        # concurrent promotions on PostgreSQL (row lock) and SQLite (write lock).
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey("model_runs.id")),
        sa.Column("processed_day", sa.Date),
        sa.Column("model_path", sa.String(1000)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("id = 1", name="ck_champion_single_row"),
    )
    # No model yet: the naive baseline is the first champion (model columns NULL).
    op.execute("INSERT INTO champion (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("champion")
    op.drop_table("model_runs")
