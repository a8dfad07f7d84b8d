"""eval stop reason: what ended each generation (eos, a stop string, max_tokens)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evalresult", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "stop_reason",
                sqlmodel.sql.sqltypes.AutoString(),
                server_default="",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("evalresult", schema=None) as batch_op:
        batch_op.drop_column("stop_reason")
