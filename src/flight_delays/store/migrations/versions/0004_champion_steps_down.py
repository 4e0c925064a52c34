"""A decayed champion steps down: the decision ``stepped down`` and the move ``step_down``.

When a run's challenger stays out and the champion model loses to the baseline on the
run's holdout by the promotion margin, the baseline becomes champion again
(flight_delays.model.promotion, rule 4). The run's row records the decision ``stepped down``
and champion_moves a ``step_down`` row (run_pk NULL: the baseline; previous_run_pk: the
model that stepped down).

The check constraints are recreated with the new values. SQLite cannot alter a
constraint in place, so both go through Alembic's batch mode (a copy of the table there;
an ALTER on PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DECISIONS_BEFORE = "decision IN ('promoted', 'kept')"
DECISIONS = "decision IN ('promoted', 'kept', 'stepped down')"
KINDS_BEFORE = "kind IN ('promotion', 'rollback')"
KINDS = "kind IN ('promotion', 'rollback', 'step_down')"


def _recreate(table: str, name: str, condition: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(name, type_="check")
        batch.create_check_constraint(name, condition)


def upgrade() -> None:
    _recreate("model_runs", "ck_model_runs_decision", DECISIONS)
    _recreate("champion_moves", "ck_champion_moves_kind", KINDS)


def downgrade() -> None:
    # Rows that use the new values cannot go back: say so rather than lose them.
    bind = op.get_bind()
    steps = bind.exec_driver_sql(
        "SELECT COUNT(*) FROM model_runs WHERE decision = 'stepped down'"
    ).scalar()
    if steps:
        raise RuntimeError(
            f"{steps} run(s) recorded a step-down: revision 0003 cannot hold them; "
            "downgrade refused"
        )
    _recreate("champion_moves", "ck_champion_moves_kind", KINDS_BEFORE)
    _recreate("model_runs", "ck_model_runs_decision", DECISIONS_BEFORE)
