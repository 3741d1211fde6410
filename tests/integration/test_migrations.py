"""Migrating from zero gives exactly the canonical schema, and many servers may migrate at once."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from workloom.engine import tasks
from workloom.engine.service import Workloom
from workloom.engine.tasks import NewTask
from workloom.store import migrate
from workloom.store.schema import metadata


def _expression_index_names() -> set[str]:
    """Indexes with an expression column (``priority DESC``): alembic cannot read them back on SQLite."""
    return {
        index.name
        for table in metadata.tables.values()
        for index in table.indexes
        if index.name and any(not isinstance(e, sa.Column) for e in index.expressions)
    }


# Foreign keys migration 0004 drops on PostgreSQL alone (SQLite would have to rebuild ``tasks``).
KEPT_ON_SQLITE = {
    "fk_tasks_workspace_id_workspaces",
    "fk_tasks_queue_id_queues",
    "fk_runs_workspace_id_workspaces",
    "fk_runs_queue_id_queues",
}


def _schema_diffs(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    diffs = compare_metadata(context, metadata)
    if connection.dialect.name == "sqlite":
        unreadable = _expression_index_names()
        diffs = [d for d in diffs if not (d[0] in ("add_index", "remove_index") and d[1].name in unreadable)]
        diffs = [d for d in diffs if not (d[0] == "remove_fk" and d[1].name in KEPT_ON_SQLITE)]
    return diffs


def _foreign_keys(connection: sa.Connection) -> set[str]:
    inspector = sa.inspect(connection)
    return {fk["name"] for table in ("tasks", "runs") for fk in inspector.get_foreign_keys(table) if fk["name"]}


async def _diffs_and_revision(wl: Workloom) -> tuple[list[object], str | None]:
    async with wl.db.read() as conn:
        diffs = await conn.run_sync(_schema_diffs)
    return diffs, await migrate.current_revision(wl.db)


async def test_migrating_from_zero_gives_the_canonical_schema(database_url):
    wl = Workloom.from_url(database_url)
    try:
        assert await migrate.current_revision(wl.db) is None
        assert await wl.ready() == (False, "migrations pending: run 'workloom migrate'")
        await wl.migrate()
        diffs, revision = await _diffs_and_revision(wl)
        assert diffs == []
        assert revision == migrate.head_revision()
        assert await wl.ready() == (True, "ok")

        await wl.migrate()  # a second run finds nothing to do
        assert await _diffs_and_revision(wl) == ([], migrate.head_revision())
    finally:
        await wl.stop()


def test_the_canonical_schema_has_expression_indexes_we_knowingly_skip_on_sqlite():
    assert _expression_index_names() == {"ix_runs_claimable", "ix_runs_claimable_any"}


async def test_servers_starting_together_all_migrate(database_url):
    servers = [Workloom.from_url(database_url) for _ in range(5)]
    try:
        async with asyncio.timeout(60):  # without the migration lock they deadlock rather than fail
            await asyncio.gather(*(server.migrate() for server in servers))
        diffs, revision = await _diffs_and_revision(servers[0])
        assert (diffs, revision) == ([], migrate.head_revision())
        assert all(ready == (True, "ok") for ready in await asyncio.gather(*(s.ready() for s in servers)))
    finally:
        await asyncio.gather(*(server.stop() for server in servers))


def _downgrade(connection: sa.Connection, revision: str) -> None:
    config = migrate._config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_0002_downgrades_and_upgrades_again_without_losing_runs(database_url):
    wl = Workloom.from_url(database_url)
    try:
        await wl.migrate()
        key = await wl.access.create_key("acme", "admin")
        principal = await wl.access.authenticate(key.secret)
        await wl.run(principal, lambda u: tasks.create(u, NewTask(title="kept", queue="q", scope="global")))
        async with wl.db.transaction() as conn:
            await conn.run_sync(lambda c: _downgrade(c, "0001"))
        assert await migrate.current_revision(wl.db) == "0001"
        async with wl.db.read() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one() == 1

        await wl.migrate()
        diffs, revision = await _diffs_and_revision(wl)
        assert (diffs, revision) == ([], migrate.head_revision())
        async with wl.db.read() as conn:
            assert (await conn.execute(sa.text("SELECT scope FROM tasks"))).scalars().all() == ["workspace"]
            assert (await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one() == 1
    finally:
        await wl.stop()


async def test_0003_keeps_the_event_log_both_ways(database_url):
    wl = Workloom.from_url(database_url)
    try:
        await wl.migrate()
        key = await wl.access.create_key("acme", "admin")
        principal = await wl.access.authenticate(key.secret)
        await wl.run(principal, lambda u: tasks.create(u, NewTask(title="kept", queue="q")))
        count = sa.text("SELECT count(*) FROM events")
        async with wl.db.read() as conn:
            events = (await conn.execute(count)).scalar_one()
        assert events >= 3  # created, ready, queued
        async with wl.db.transaction() as conn:
            await conn.run_sync(lambda c: _downgrade(c, "0002"))
        async with wl.db.read() as conn:
            assert (await conn.execute(count)).scalar_one() == events
            fks = await conn.run_sync(lambda c: sa.inspect(c).get_foreign_keys("events"))
        assert [fk["referred_table"] for fk in fks] == ["workspaces"]

        await wl.migrate()
        assert await _diffs_and_revision(wl) == ([], migrate.head_revision())
        async with wl.db.read() as conn:
            assert (await conn.execute(count)).scalar_one() == events
            assert await conn.run_sync(lambda c: sa.inspect(c).get_foreign_keys("events")) == []
    finally:
        await wl.stop()


async def test_0004_drops_the_shared_parent_keys_on_postgres_only_and_downgrades_with_the_rows(database_url):
    wl = Workloom.from_url(database_url)
    try:
        await wl.migrate()
        key = await wl.access.create_key("acme", "admin")
        principal = await wl.access.authenticate(key.secret)
        await wl.run(principal, lambda u: tasks.create(u, NewTask(title="kept", queue="q")))
        postgres = wl.db.is_postgres
        async with wl.db.read() as conn:
            assert await conn.run_sync(_foreign_keys) == (
                {"fk_runs_task_id_tasks", "fk_tasks_parent_task_id_tasks"} | (set() if postgres else KEPT_ON_SQLITE)
            )

        async with wl.db.transaction() as conn:
            await conn.run_sync(lambda c: _downgrade(c, "0003"))
        async with wl.db.read() as conn:
            assert await conn.run_sync(_foreign_keys) >= KEPT_ON_SQLITE  # back, and the rows satisfy them
            assert (await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one() == 1

        await wl.migrate()
        assert await _diffs_and_revision(wl) == ([], migrate.head_revision())
        async with wl.db.read() as conn:
            assert (await conn.run_sync(_foreign_keys) & KEPT_ON_SQLITE) == (set() if postgres else KEPT_ON_SQLITE)
    finally:
        await wl.stop()


async def test_the_scope_check_constraint_is_in_the_database(migrated_url):
    wl = Workloom.from_url(migrated_url)
    try:
        key = await wl.access.create_key("acme", "admin")
        principal = await wl.access.authenticate(key.secret)
        task = await wl.run(principal, lambda u: tasks.create(u, NewTask(title="t")))
        with pytest.raises(sa.exc.IntegrityError):
            async with wl.db.transaction() as conn:
                await conn.execute(sa.text("UPDATE tasks SET scope = 'universe' WHERE id = :id"), {"id": task.id})
    finally:
        await wl.stop()
