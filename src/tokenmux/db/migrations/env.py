"""Alembic's entry: always handed an open connection by tokenmux.db.engine.upgrade."""

from alembic import context

from tokenmux.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
