"""Named operations on queues."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import Queue
from workloom.store import rows
from workloom.store.fast import Statement
from workloom.store.schema import queues


async def queue_get_by_name(conn: AsyncConnection, workspace_id: str, name: str) -> Queue | None:
    row = (
        (await conn.execute(sa.select(queues).where(queues.c.workspace_id == workspace_id, queues.c.name == name)))
        .mappings()
        .first()
    )
    return rows.queue(row) if row else None


_GET = Statement(
    sa.select(queues).where(
        queues.c.workspace_id == sa.bindparam("workspace_id", type_=queues.c.workspace_id.type),
        queues.c.id == sa.bindparam("queue_id", type_=queues.c.id.type),
    )
)


async def queue_get(conn: AsyncConnection, workspace_id: str, queue_id: str) -> Queue | None:
    row = await _GET.first(conn, {"workspace_id": workspace_id, "queue_id": queue_id})
    return rows.queue(row) if row else None


async def queue_insert(conn: AsyncConnection, queue: Queue) -> bool:
    """Insert unless a queue of that name exists already (a concurrent creator won); True if inserted."""
    values = {
        "id": queue.id,
        "workspace_id": queue.workspace_id,
        "name": queue.name,
        "description": queue.description,
        "lease_seconds": queue.lease_seconds,
        "max_attempts": queue.max_attempts,
        "initial_interval_seconds": queue.initial_interval_seconds,
        "backoff_coefficient": queue.backoff_coefficient,
        "max_interval_seconds": queue.max_interval_seconds,
        "start_mode": queue.start_mode,
        "created_at": queue.created_at,
        "updated_at": queue.updated_at,
    }
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(queues).values(values).on_conflict_do_nothing(index_elements=["workspace_id", "name"])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(queues).values(values).on_conflict_do_nothing(index_elements=["workspace_id", "name"])
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def queue_list(conn: AsyncConnection, workspace_id: str) -> list[Queue]:
    result = await conn.execute(sa.select(queues).where(queues.c.workspace_id == workspace_id).order_by(queues.c.name))
    return [rows.queue(row) for row in result.mappings()]


async def queue_update(conn: AsyncConnection, workspace_id: str, queue_id: str, values: dict[str, Any]) -> None:
    await conn.execute(
        sa.update(queues).where(queues.c.workspace_id == workspace_id, queues.c.id == queue_id).values(**values)
    )


async def queue_names(conn: AsyncConnection, workspace_id: str, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    result = await conn.execute(
        sa.select(queues.c.id, queues.c.name).where(queues.c.workspace_id == workspace_id, queues.c.id.in_(ids))
    )
    return {row.id: row.name for row in result}


async def queue_ids_by_name(conn: AsyncConnection, workspace_id: str, names: list[str]) -> dict[str, str]:
    """Name -> id for the named queues that exist."""
    if not names:
        return {}
    result = await conn.execute(
        sa.select(queues.c.name, queues.c.id).where(queues.c.workspace_id == workspace_id, queues.c.name.in_(names))
    )
    return {row.name: row.id for row in result}


async def queue_get_many(conn: AsyncConnection, workspace_id: str, ids: set[str]) -> list[Queue]:
    if not ids:
        return []
    result = await conn.execute(sa.select(queues).where(queues.c.workspace_id == workspace_id, queues.c.id.in_(ids)))
    return [rows.queue(row) for row in result.mappings()]
