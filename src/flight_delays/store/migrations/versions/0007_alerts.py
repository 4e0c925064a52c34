"""Alerts: every alert the pipeline raised (a failed run, a missed deadline, late data,
drift...), sent or not, with what each transport did.

- alerts: one row per alert: when (UTC), its kind, the DAG and run, the processed day,
  a one-line summary, ``channels`` (what each transport did, e.g. "smtp: sent; webhook:
  not sent: connection refused", or "log only: no alert connection") and ``delivery``
  (sent, log only, not sent, suppressed: held back by the anti-flood rule).

Revision ID: 0007_alerts
Revises: 0006_drift
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_alerts"
down_revision = "0006_drift"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250)),
        sa.Column("day", sa.Date),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("delivery", sa.String(20), nullable=False),
    )
    op.create_index("ix_alerts_dag_kind_at", "alerts", ["dag_id", "kind", "at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_dag_kind_at", table_name="alerts")
    op.drop_table("alerts")
