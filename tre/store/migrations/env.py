"""Alembic environment: runs on the connection the store passes in (no alembic.ini needed)."""

from alembic import context

from tre.store._tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only used from the command line by developers
    raise SystemExit("run migrations through tre (Store.migrate); alembic alone has no database URL here")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
