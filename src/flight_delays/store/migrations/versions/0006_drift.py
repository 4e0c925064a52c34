"""Input drift: the PSI of each feature, per scored run.

- drift_scores: one row per (processed day, run, feature), written by the score task
  (flight_delays.monitor.drift): the feature's kind (numeric or categorical), its PSI between the
  processed day's flights and the training window's (NULL: the day had too few flights
  to measure), the alert threshold it was judged against (NULL: the feature is measured
  only, not judged), whether it was flagged, and the rows on each side. A retried score
  task replaces its run's rows, so each run has one set.

Revision ID: 0006_drift
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_drift"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("processed_day", sa.Date, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("feature", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("psi", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("day_rows", sa.Integer, nullable=False),
        sa.Column("window_rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.UniqueConstraint(
            "processed_day", "run_id", "feature", name="uq_drift_scores_run_feature"
        ),
        sa.CheckConstraint("kind IN ('numeric', 'categorical')", name="ck_drift_scores_kind"),
    )
    op.create_index("ix_drift_scores_processed_day", "drift_scores", ["processed_day"])


def downgrade() -> None:
    op.drop_index("ix_drift_scores_processed_day", table_name="drift_scores")
    op.drop_table("drift_scores")
