"""Named operations on timers: every time-driven transition is a row with a ``fire_at``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.fast import Statement
from workloom.store.schema import timers


@dataclass(slots=True)
class Timer:
    id: str
    workspace_id: str
    kind: str
    task_id: str | None
    run_id: str | None
    fire_at: datetime


_INSERT = Statement(
    sa.insert(timers).values(
        {
            name: sa.bindparam(name, type_=timers.c[name].type)
            for name in ("id", "workspace_id", "kind", "task_id", "run_id", "fire_at", "created_at")
        }
    )
)


async def timer_insert(conn: AsyncConnection, timer: Timer, now: datetime) -> None:
    await _INSERT.execute(
        conn,
        {
            "id": timer.id,
            "workspace_id": timer.workspace_id,
            "kind": timer.kind,
            "task_id": timer.task_id,
            "run_id": timer.run_id,
            "fire_at": timer.fire_at,
            "created_at": now,
        },
    )


async def timer_delete_for_task(conn: AsyncConnection, task_id: str, kind: str) -> None:
    await conn.execute(sa.delete(timers).where(timers.c.task_id == task_id, timers.c.kind == kind))


async def timer_take_due(conn: AsyncConnection, now: datetime, limit: int) -> list[Timer]:
    """Lock and delete up to ``limit`` timers due by ``now``; the caller fires them in the same transaction."""
    stmt = sa.select(timers).where(timers.c.fire_at <= now).order_by(timers.c.fire_at).limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    due = [
        Timer(
            id=r["id"],
            workspace_id=r["workspace_id"],
            kind=r["kind"],
            task_id=r["task_id"],
            run_id=r["run_id"],
            fire_at=r["fire_at"],
        )
        for r in (await conn.execute(stmt)).mappings()
    ]
    if due:
        await conn.execute(sa.delete(timers).where(timers.c.id.in_([t.id for t in due])))
    return due


async def timer_next_fire_at(conn: AsyncConnection) -> datetime | None:
    result = await conn.execute(sa.select(sa.func.min(timers.c.fire_at)))
    value: datetime | None = result.scalar_one()
    return value
