"""One registry row per run, and the trained challengers with their hashes.

- model_runs gets a unique key on (processed_day, run_id): a retried score finds its
  run's row instead of adding another. Rows that earlier retries added for a run that
  already had one keep their place in the history, renamed ``<run_id>#<id>``; the first
  row of the run keeps its run_id (it holds the decision that was acted on).
- model_runs.report_json: the ``metrics`` payload as recorded, so that a retried score
  writes the metrics artifact again from the row rather than from a new scoring.
- challengers: what each run's train task wrote (model and model card, with SHA-256),
  kept outside the model folder so that score checks the files against it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE model_runs SET run_id = run_id || '#' || CAST(id AS VARCHAR(20)) "
        "WHERE run_id IS NOT NULL AND id NOT IN ("
        "SELECT first_id FROM (SELECT MIN(id) AS first_id FROM model_runs "
        "WHERE run_id IS NOT NULL GROUP BY processed_day, run_id) AS firsts)"
    )
    op.create_index("uq_model_runs_day_run", "model_runs", ["processed_day", "run_id"], unique=True)
    op.add_column("model_runs", sa.Column("report_json", sa.Text))
    op.create_table(
        "challengers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("processed_day", sa.Date, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("model_path", sa.String(1000), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("card_path", sa.String(1000), nullable=False),
        sa.Column("card_sha256", sa.String(64), nullable=False),
        sa.Column("train_rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.UniqueConstraint("processed_day", "run_id", name="uq_challengers_day_run"),
    )


def downgrade() -> None:
    op.drop_table("challengers")
    op.drop_index("uq_model_runs_day_run", table_name="model_runs")
    with op.batch_alter_table("model_runs") as batch:
        batch.drop_column("report_json")
