"""Named operations on the append-only event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import Event
from workloom.store import rows
from workloom.store.fast import Statements, Write
from workloom.store.schema import events

# What an event's ``commit_horizon`` is written as (PostgreSQL): the next transaction id.
COMMIT_HORIZON: sa.ColumnClause[Any] = sa.literal_column("pg_snapshot_xmax(pg_current_snapshot())::text::bigint")


def _insert(dialect: str, names: tuple[str, ...]) -> sa.Insert:
    values: dict[str, Any] = {n: sa.bindparam(n, type_=events.c[n].type) for n in names}
    if dialect == "postgresql":
        values["commit_horizon"] = COMMIT_HORIZON
    return sa.insert(events).values(values)


_INSERT = Statements(_insert)


def event_inserts(rows_: list[dict[str, Any]]) -> list[Write]:
    """The insert of events (all of one row shape), for ``fast.write_all``."""
    return [Write(_INSERT.for_columns(rows_[0]), rows_)] if rows_ else []


async def event_stable_horizon(conn: AsyncConnection) -> int | None:
    """The oldest transaction id still running in this database (PostgreSQL): rows whose
    ``commit_horizon`` is at or below it can no longer be overtaken by an earlier sequence number.
    None where commits are serial (SQLite)."""
    if conn.dialect.name != "postgresql":
        return None
    row = (
        await conn.execute(
            sa.text(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
                "(SELECT min(backend_xid::text::bigint) FROM pg_stat_activity "
                " WHERE datname = current_database() AND backend_xid IS NOT NULL)"
            )
        )
    ).one()
    next_xid, oldest = int(row[0]), row[1]
    if oldest is None:
        return next_xid
    # backend_xid is the 32-bit id; place it in the epoch of the 64-bit next id (or the one before).
    epoch, low = next_xid >> 32, next_xid & 0xFFFFFFFF
    return ((epoch if int(oldest) <= low else epoch - 1) << 32) | int(oldest)


async def event_list_for_task(
    conn: AsyncConnection, workspace_id: str, task_id: str, *, after_sequence: int = 0, limit: int = 1000
) -> list[Event]:
    result = await conn.execute(
        sa.select(events)
        .where(
            events.c.workspace_id == workspace_id, events.c.task_id == task_id, events.c.task_sequence > after_sequence
        )
        .order_by(events.c.task_sequence)
        .limit(limit)
    )
    return [rows.event(row) for row in result.mappings()]


async def event_list_after(
    conn: AsyncConnection,
    workspace_id: str,
    *,
    after: int,
    limit: int = 500,
    types: list[str] | None = None,
    task_id: str | None = None,
) -> list[tuple[Event, int | None]]:
    """Events after a global sequence, each with its commit horizon."""
    stmt = sa.select(events).where(events.c.workspace_id == workspace_id, events.c.sequence > after)
    if types:
        stmt = stmt.where(events.c.type.in_(types))
    if task_id:
        stmt = stmt.where(events.c.task_id == task_id)
    result = await conn.execute(stmt.order_by(events.c.sequence).limit(limit))
    return [(rows.event(row), row["commit_horizon"]) for row in result.mappings()]


async def event_last_sequence(conn: AsyncConnection, workspace_id: str) -> int:
    result = await conn.execute(sa.select(sa.func.max(events.c.sequence)).where(events.c.workspace_id == workspace_id))
    return int(result.scalar_one() or 0)


async def event_count_by_type_since(conn: AsyncConnection, since: datetime) -> list[tuple[str, int]]:
    result = await conn.execute(
        sa.select(events.c.type, sa.func.count()).where(events.c.created_at >= since).group_by(events.c.type)
    )
    return [(r[0], int(r[1])) for r in result]
