"""Airlock: checkers' overrides of automated results, per-project disclosure rules, the rules each submission was
checked under, and the author's declaration of a file's table kind.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airlock_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("checker", sa.String(length=64), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["airlock_requests.id"], name=op.f("fk_airlock_overrides_request_id_airlock_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_airlock_overrides")),
    )
    with op.batch_alter_table("airlock_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_airlock_overrides_request_id"), ["request_id"], unique=False)

    op.create_table(
        "airlock_project_rules",
        sa.Column("project_name", sa.String(length=40), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_name"], ["projects.name"], name=op.f("fk_airlock_project_rules_project_name_projects")
        ),
        sa.PrimaryKeyConstraint("project_name", name=op.f("pk_airlock_project_rules")),
    )
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules", sa.Text(), server_default="", nullable=False))
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("table_kind", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.drop_column("table_kind")
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.drop_column("rules")
    op.drop_table("airlock_project_rules")
    with op.batch_alter_table("airlock_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_airlock_overrides_request_id"))
    op.drop_table("airlock_overrides")
