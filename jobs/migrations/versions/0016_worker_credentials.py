"""worker credentials: each Mac of a LAN farm has a Redis user and a DB role of its own

`farm up --lan` and `farm workers add NAME` issue them inside a join token;
`farm workers revoke NAME` shuts one Mac out. Redis keeps nothing on disk, so
its ACL users are made again from these rows (the password's sha256) at start.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 09:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workercredential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("redis_user", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("redis_password_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("db_role", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("workercredential")
