"""Airlock requests, their files, checkers' ballots and automated check results.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 11:34:50.602770
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airlock_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_name", sa.String(length=40), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("controls", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("submitted_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_name"], ["projects.name"], name=op.f("fk_airlock_requests_project_name_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_airlock_requests")),
    )
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_airlock_requests_author"), ["author"], unique=False)
        batch_op.create_index(batch_op.f("ix_airlock_requests_project_name"), ["project_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_airlock_requests_state"), ["state"], unique=False)

    op.create_table(
        "airlock_ballots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("checker", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=200), nullable=False),
        sa.Column("vote", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["airlock_requests.id"], name=op.f("fk_airlock_ballots_request_id_airlock_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_airlock_ballots")),
    )
    with op.batch_alter_table("airlock_ballots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_airlock_ballots_request_id"), ["request_id"], unique=False)

    op.create_table(
        "airlock_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["airlock_requests.id"], name=op.f("fk_airlock_checks_request_id_airlock_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_airlock_checks")),
    )
    with op.batch_alter_table("airlock_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_airlock_checks_request_id"), ["request_id"], unique=False)

    op.create_table(
        "airlock_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("added_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["airlock_requests.id"], name=op.f("fk_airlock_files_request_id_airlock_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_airlock_files")),
        sa.UniqueConstraint("request_id", "name", name=op.f("uq_airlock_files_request_id")),
    )
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_airlock_files_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_airlock_files_request_id"))

    op.drop_table("airlock_files")
    with op.batch_alter_table("airlock_checks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_airlock_checks_request_id"))

    op.drop_table("airlock_checks")
    with op.batch_alter_table("airlock_ballots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_airlock_ballots_request_id"))

    op.drop_table("airlock_ballots")
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_airlock_requests_state"))
        batch_op.drop_index(batch_op.f("ix_airlock_requests_project_name"))
        batch_op.drop_index(batch_op.f("ix_airlock_requests_author"))

    op.drop_table("airlock_requests")
