"""Schema migrations: applied by ``workloom migrate`` and at ``serve``; safe when many servers start at once."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from workloom.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every server process.
_MIGRATION_LOCK_ID = 7_357_001


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction commits: the other servers wait here, then find nothing to do.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


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
