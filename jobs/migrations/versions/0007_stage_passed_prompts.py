"""eval stage passed prompts: the ids of the prompts a stage scored in full

seed-lock@k needs, per prompt, how many seeds got it right. Kept on the eval
stage (written once with its summary) so the leaderboard reads one small list
per stage instead of every eval row; filled here for evals done before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("passed_prompts", sa.JSON(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT s.id, e.prompt_id FROM stage s JOIN evalresult e ON e.stage_id = s.id "
            "AND e.attempt = s.attempt WHERE s.kind = 'eval' AND s.status = 'done' "
            "AND e.score >= 1.0 ORDER BY s.id, e.prompt_id"
        )
    )
    passed: dict[int, list[str]] = {}
    for stage_id, prompt_id in rows:
        passed.setdefault(stage_id, []).append(prompt_id)
    done = connection.execute(
        sa.text("SELECT id FROM stage WHERE kind = 'eval' AND status = 'done'")
    ).scalars()
    update = sa.text("UPDATE stage SET passed_prompts = :passed WHERE id = :id")
    for stage_id in list(done):
        connection.execute(update, {"id": stage_id, "passed": json.dumps(passed.get(stage_id, []))})


def downgrade() -> None:
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.drop_column("passed_prompts")
