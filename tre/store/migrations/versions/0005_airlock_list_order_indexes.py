"""Airlock: indexes in the order requests are listed (oldest first), overall and per project, so a page is read
from an index instead of sorting every request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 15:00:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_airlock_requests_created_at_id", "airlock_requests", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_airlock_requests_project_created_at_id",
        "airlock_requests",
        ["project_name", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_airlock_requests_project_created_at_id", table_name="airlock_requests")
    op.drop_index("ix_airlock_requests_created_at_id", table_name="airlock_requests")
