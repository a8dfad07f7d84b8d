"""gang seats: where each rank of a data-parallel training listens

A train stage with `train.workers: N` runs on N workers at once (`jobs.gang`).
Each rank's attempt records the address its ring listens on and the sha256 of
the dataset its worker reads, so the ranks can find each other and refuse a
gang whose copies of the data differ.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stageattempt", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ring_address", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("dataset_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("stageattempt", schema=None) as batch_op:
        batch_op.drop_column("dataset_sha256")
        batch_op.drop_column("ring_address")
