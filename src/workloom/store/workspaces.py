"""Named operations on workspaces and their API keys."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import ApiKey, Workspace
from workloom.store import rows
from workloom.store.schema import api_keys, workspaces


async def workspace_get_by_name(conn: AsyncConnection, name: str) -> Workspace | None:
    row = (await conn.execute(sa.select(workspaces).where(workspaces.c.name == name))).mappings().first()
    return rows.workspace(row) if row else None


async def workspace_get(conn: AsyncConnection, workspace_id: str) -> Workspace | None:
    row = (await conn.execute(sa.select(workspaces).where(workspaces.c.id == workspace_id))).mappings().first()
    return rows.workspace(row) if row else None


async def workspace_insert(conn: AsyncConnection, *, id: str, name: str, now: datetime) -> Workspace:
    await conn.execute(sa.insert(workspaces).values(id=id, name=name, task_counter=0, created_at=now))
    return Workspace(id=id, name=name, created_at=now)


async def workspace_list(conn: AsyncConnection) -> list[Workspace]:
    result = await conn.execute(sa.select(workspaces).order_by(workspaces.c.name))
    return [rows.workspace(row) for row in result.mappings()]


async def workspace_next_task_numbers(conn: AsyncConnection, workspace_id: str, count: int = 1) -> int:
    """Reserve ``count`` task numbers; returns the last one reserved."""
    result = await conn.execute(
        sa.update(workspaces)
        .where(workspaces.c.id == workspace_id)
        .values(task_counter=workspaces.c.task_counter + count)
        .returning(workspaces.c.task_counter)
    )
    return int(result.scalar_one())


async def key_insert(
    conn: AsyncConnection,
    *,
    id: str,
    workspace_id: str,
    role: str,
    name: str,
    prefix: str,
    key_hash: str,
    now: datetime,
) -> ApiKey:
    await conn.execute(
        sa.insert(api_keys).values(
            id=id, workspace_id=workspace_id, role=role, name=name, prefix=prefix, key_hash=key_hash, created_at=now
        )
    )
    return ApiKey(id=id, workspace_id=workspace_id, role=role, name=name, prefix=prefix, created_at=now)


async def key_get_by_hash(conn: AsyncConnection, key_hash: str) -> tuple[ApiKey, str] | None:
    """The key and its stored hash (for the constant-time comparison the caller makes)."""
    row = (
        (
            await conn.execute(
                sa.select(api_keys).where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
            )
        )
        .mappings()
        .first()
    )
    return (rows.api_key(row), row["key_hash"]) if row else None


async def key_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(api_keys))).scalar_one())


async def key_list(conn: AsyncConnection, workspace_id: str) -> list[ApiKey]:
    result = await conn.execute(
        sa.select(api_keys).where(api_keys.c.workspace_id == workspace_id).order_by(api_keys.c.created_at)
    )
    return [rows.api_key(row) for row in result.mappings()]
