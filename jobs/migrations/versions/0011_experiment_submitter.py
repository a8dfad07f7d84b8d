"""experiment submitter: who submitted an experiment, for the per-submitter quota

`farm submit` records the OS user and the web form "web"; the queue quota
FARM_MAX_QUEUED_RUNS_PER_SUBMITTER counts the unfinished runs of one submitter.
Older rows keep NULL (counted against the farm's quota only).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("submitter", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_experiment_submitter"), ["submitter"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_submitter"))
        batch_op.drop_column("submitter")
