"""signin state: the UI's sign-in throttle, kept across restarts and UI processes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:20:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "signinstate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The one row every UI process updates (never inserts: no race to create it).
    op.bulk_insert(table, [{"id": 1, "version": 0, "state": {}, "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("signinstate")
