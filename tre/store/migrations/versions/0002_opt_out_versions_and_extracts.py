"""Opt-out list versions and provisioned extracts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:54:44.769547
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "optout_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("imported_at", sa.String(length=32), nullable=False),
        sa.Column("numbers", sa.Integer(), nullable=False),
        sa.Column("invalid_lines", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_optout_versions")),
    )
    op.create_table(
        "extracts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("project_name", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("optout_version", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("manifest_key", sa.String(length=256), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["project_name"], ["projects.name"], name=op.f("fk_extracts_project_name_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extracts")),
        sa.UniqueConstraint("seq", name=op.f("uq_extracts_seq")),
    )
    with op.batch_alter_table("extracts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extracts_project_name"), ["project_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("extracts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extracts_project_name"))

    op.drop_table("extracts")
    op.drop_table("optout_versions")
