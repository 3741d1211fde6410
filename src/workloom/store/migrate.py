"""Schema migrations: applied by ``workloom migrate`` and at ``serve``; safe when many servers start at once."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from workloom.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every server process.
_MIGRATION_LOCK_ID = 7_357_001
VERSION_TABLE = "alembic_version"  # where alembic keeps the revision a database is at


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest revision this installation knows (its scripts are read once: they do not change under
    a running process)."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction commits: the other servers wait here, then find nothing to do.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current(connection: sa.Connection) -> str | None:
    # Read here rather than through alembic's MigrationContext, which logs two lines at INFO each time one
    # is made: every readiness probe of every server wrote them.
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    found = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return str(found[0]) if len(found) == 1 else None  # linear history: one row once migrated


async def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (SQLite's ``BEGIN IMMEDIATE`` serialises it there)."""
    async with db.transaction() as conn:
        # On SQLite the transaction begins with its first statement: begin it before alembic runs. Alembic
        # imports the migration scripts as it goes, and a server that began inside that import (waiting
        # for the write lock there) held back the server that had it, which then never committed.
        await conn.exec_driver_sql("SELECT 1")
        await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    return await db.reading(lambda conn: conn.run_sync(_current))


async def is_current(db: Database) -> bool:
    return await current_revision(db) == head_revision()
