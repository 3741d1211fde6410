"""Named operations on stored idempotent answers."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.schema import idempotency_keys


async def idempotency_get(
    conn: AsyncConnection, workspace_id: str, key_hash: str, *, lock: bool = False
) -> tuple[str, int | None, bytes | None] | None:
    stmt = sa.select(
        idempotency_keys.c.request_hash, idempotency_keys.c.status_code, idempotency_keys.c.response
    ).where(idempotency_keys.c.workspace_id == workspace_id, idempotency_keys.c.key_hash == key_hash)
    if lock:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    return (row[0], row[1], row[2]) if row else None


async def idempotency_insert(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    key_hash: str,
    request_hash: str,
    status_code: int,
    response: bytes,
    now: datetime,
) -> None:
    await conn.execute(
        sa.insert(idempotency_keys).values(
            workspace_id=workspace_id,
            key_hash=key_hash,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
        )
    )


async def idempotency_prune(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
    return int(result.rowcount)


async def idempotency_lock(conn: AsyncConnection, workspace_id: str, key_hash: str) -> None:
    """Serialise requests that share a key, so the second waits and then finds the first answer.
    SQLite needs nothing: its transactions already run one at a time."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"{workspace_id}:{key_hash}"}
        )
