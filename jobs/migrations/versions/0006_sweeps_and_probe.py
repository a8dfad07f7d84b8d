"""sweeps (a grid of experiments from one submission) and the adherence probe

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sweep_name"), "sweep", ["name"], unique=False)
    op.create_index(op.f("ix_sweep_created_at"), "sweep", ["created_at"], unique=False)
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sweep_point", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_experiment_sweep_id"), ["sweep_id"], unique=False)
        batch_op.create_foreign_key("fk_experiment_sweep_id", "sweep", ["sweep_id"], ["id"])
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probe_adherence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("probe_labels", sa.JSON(), nullable=True))
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("early_stop", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage", schema=None) as batch_op:
        batch_op.drop_column("early_stop")
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.drop_column("probe_labels")
        batch_op.drop_column("probe_adherence")
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_constraint("fk_experiment_sweep_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_experiment_sweep_id"))
        batch_op.drop_column("sweep_point")
        batch_op.drop_column("sweep_id")
    op.drop_index(op.f("ix_sweep_created_at"), table_name="sweep")
    op.drop_index(op.f("ix_sweep_name"), table_name="sweep")
    op.drop_table("sweep")
