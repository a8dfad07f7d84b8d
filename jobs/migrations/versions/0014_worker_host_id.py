"""worker host id: which Mac's disk a worker writes to

A run's checkpoints and artifacts are on one Mac's disk; `run.host` and
`artifact.host` now name that Mac's host id (`jobs.host_identity`) and every
worker process records the id it runs under, so any of them resumes its Mac's
checkpoints. Workers registered before this take their name as their host id,
which is what their runs' `host` already says.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f("ix_worker_host_id"), ["host_id"], unique=False)
    op.execute("UPDATE worker SET host_id = name WHERE host_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_host_id"))
        batch_op.drop_column("host_id")
