"""The champion's moves: every change of the champion, with its reason.

The champion row says who serves now; champion_moves says how it got there. A promotion
by score and a rollback by a person each add one row (the run that became champion, or
NULL for the baseline; the run it replaced; the reason), so "roll back" has a previous
champion to return to and an audit trail, as a model registry's alias history does.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "champion_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey("model_runs.id")),
        sa.Column("previous_run_pk", sa.Integer, sa.ForeignKey("model_runs.id")),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('promotion', 'rollback')", name="ck_champion_moves_kind"),
    )


def downgrade() -> None:
    op.drop_table("champion_moves")
