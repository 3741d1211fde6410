"""Alembic environment: migrations always run on a connection handed in by ``workloom.store.migrate``."""

from __future__ import annotations

from alembic import context

from workloom.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
context.run_migrations()
