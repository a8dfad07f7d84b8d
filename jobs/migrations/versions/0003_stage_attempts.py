"""stage attempts: attempt numbers on stages and results, heartbeats, resume point

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 13:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESULT_TABLES = ("metric", "evalresult", "artifact")


def upgrade() -> None:
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("resumed_from", sa.Integer(), nullable=True))
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("attempt", sa.Integer(), server_default="0", nullable=False)
            )
    op.create_table(
        "stageattempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("resumed_from", sa.Integer(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["stage_id"], ["stage.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stageattempt_stage_id", "stageattempt", ["stage_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stageattempt_stage_id", table_name="stageattempt")
    op.drop_table("stageattempt")
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("attempt")
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.drop_column("resumed_from")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("attempt")
