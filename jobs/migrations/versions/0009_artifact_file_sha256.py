"""artifact file digests: each file's sha256 next to the artifact's own

`farm export` checks an artifact against its recorded sha256; with each file's
digest kept too, a refusal names the file that changed, was added or is gone.
Older rows keep NULL (the export then names the files modified since).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("artifact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("file_sha256", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifact", schema=None) as batch_op:
        batch_op.drop_column("file_sha256")
