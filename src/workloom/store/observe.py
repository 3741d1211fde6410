"""Named operations behind the observer dashboard: grouped counts over indexed columns and bounded lists.

Every query here is either a ``GROUP BY`` that an index answers (``ix_tasks_workspace_status_reason``,
``ix_runs_workspace_status_reason``, ``ix_runs_claimable``), a scan of the held runs (as many as there
are workers), or an ``ORDER BY … LIMIT`` down an index, so the cost does not grow with finished work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import Run
from workloom.store import rows
from workloom.store.schema import inline, inline_all, queues, runs, tasks

_HELD = ("claimed", "starting", "running")


@dataclass(frozen=True, slots=True)
class ObserveFilters:
    scope: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    origin_kind: str | None = None
    queue_id: str | None = None

    @property
    def on_tasks(self) -> bool:
        return any(v is not None for v in (self.scope, self.owner_kind, self.owner_ref, self.origin_kind))


def _task_where(workspace_id: str, f: ObserveFilters) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [tasks.c.workspace_id == workspace_id]
    if f.scope is not None:
        where.append(tasks.c.scope == f.scope)
    if f.owner_kind is not None:
        where.append(tasks.c.owner_kind == f.owner_kind)
    if f.owner_ref is not None:
        where.append(tasks.c.owner_ref == f.owner_ref)
    if f.origin_kind is not None:
        where.append(tasks.c.origin_kind == f.origin_kind)
    if f.queue_id is not None:
        where.append(tasks.c.queue_id == f.queue_id)
    return where


def _runs_of(stmt: sa.Select[Any], workspace_id: str, f: ObserveFilters) -> sa.Select[Any]:
    """Restrict a select over ``runs`` to the workspace and the filters (joining tasks only if needed)."""
    stmt = stmt.where(runs.c.workspace_id == workspace_id)
    if f.queue_id is not None:
        stmt = stmt.where(runs.c.queue_id == f.queue_id)
    if f.on_tasks:
        task_filters = ObserveFilters(f.scope, f.owner_kind, f.owner_ref, f.origin_kind)
        stmt = stmt.join(tasks, tasks.c.id == runs.c.task_id).where(*_task_where(workspace_id, task_filters))
    return stmt


async def observe_task_counts(
    conn: AsyncConnection, workspace_id: str, f: ObserveFilters
) -> list[tuple[str, str | None, str, int]]:
    """(status, blocked_reason, approval_state, count) for every combination present."""
    result = await conn.execute(
        sa.select(tasks.c.status, tasks.c.blocked_reason, tasks.c.approval_state, sa.func.count())
        .where(*_task_where(workspace_id, f))
        .group_by(tasks.c.status, tasks.c.blocked_reason, tasks.c.approval_state)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in result]


async def observe_run_counts(
    conn: AsyncConnection, workspace_id: str, f: ObserveFilters
) -> list[tuple[str, str | None, int]]:
    """(status, end_reason, count) for every combination present."""
    stmt = _runs_of(sa.select(runs.c.status, runs.c.end_reason, sa.func.count()), workspace_id, f)
    result = await conn.execute(stmt.group_by(runs.c.status, runs.c.end_reason))
    return [(r[0], r[1], int(r[2])) for r in result]


_RUN_WITH_QUEUE = sa.select(runs, queues.c.name.label("queue_name")).select_from(
    runs.join(queues, queues.c.id == runs.c.queue_id)
)


async def observe_held_runs(conn: AsyncConnection, workspace_id: str, f: ObserveFilters, limit: int) -> list[Run]:
    """Held runs, the soonest (or longest past) lease end first: stuck ones lead."""
    stmt = _runs_of(_RUN_WITH_QUEUE, workspace_id, f).where(runs.c.status.in_(inline_all(_HELD)))
    result = await conn.execute(stmt.order_by(runs.c.lease_until, runs.c.id).limit(limit))
    return [rows.run(row) for row in result.mappings()]


async def observe_queued_runs(conn: AsyncConnection, workspace_id: str, f: ObserveFilters, limit: int) -> list[Run]:
    """Queued runs in the order claim-next would take them."""
    if limit <= 0:
        return []
    stmt = _runs_of(_RUN_WITH_QUEUE, workspace_id, f).where(runs.c.status == inline("queued"))
    result = await conn.execute(stmt.order_by(runs.c.priority.desc(), runs.c.available_at, runs.c.id).limit(limit))
    return [rows.run(row) for row in result.mappings()]


@dataclass(frozen=True, slots=True)
class HeldSummary:
    stuck: int
    orphans: int  # held runs whose task is no longer being worked on
    latest_heartbeat_at: datetime | None


async def observe_held_summary(
    conn: AsyncConnection, workspace_id: str, f: ObserveFilters, *, now: datetime, stuck_after: timedelta
) -> HeldSummary:
    """Over the held runs only (as many as there are workers): stuck, orphaned, latest heartbeat."""
    last_sign = sa.func.coalesce(runs.c.heartbeat_at, runs.c.claimed_at)
    stuck = sa.case((sa.or_(runs.c.lease_until <= now, last_sign < now - stuck_after), 1), else_=0)
    owner = tasks.alias("owner_task")
    orphan = sa.case((owner.c.status.not_in(("in_progress", "on_hold")), 1), else_=0)
    stmt = _runs_of(
        sa.select(sa.func.sum(stuck), sa.func.sum(orphan), sa.func.max(runs.c.heartbeat_at)).select_from(
            runs.join(owner, owner.c.id == runs.c.task_id)
        ),
        workspace_id,
        f,
    ).where(runs.c.status.in_(inline_all(_HELD)))
    row = (await conn.execute(stmt)).one()
    return HeldSummary(int(row[0] or 0), int(row[1] or 0), row[2])


async def observe_queue_depths(
    conn: AsyncConnection, workspace_id: str, f: ObserveFilters, now: datetime
) -> list[tuple[str, int, datetime | None]]:
    """(queue name, runs claimable now, since when the oldest is claimable) per queue with any."""
    inner = _runs_of(
        sa.select(runs.c.queue_id, sa.func.count().label("depth"), sa.func.min(runs.c.available_at).label("oldest")),
        workspace_id,
        f,
    ).where(runs.c.status == inline("queued"), runs.c.available_at <= now)
    grouped = inner.group_by(runs.c.queue_id).subquery()
    result = await conn.execute(
        sa.select(queues.c.name, grouped.c.depth, grouped.c.oldest)
        .select_from(grouped.join(queues, queues.c.id == grouped.c.queue_id))
        .order_by(queues.c.name)
    )
    return [(r[0], int(r[1]), r[2]) for r in result]


async def observe_claim_samples(
    conn: AsyncConnection, workspace_id: str, f: ObserveFilters, limit: int
) -> list[tuple[datetime, datetime | None, datetime | None]]:
    """(available_at, claimed_at, started_at) of the most recent claims."""
    stmt = _runs_of(sa.select(runs.c.available_at, runs.c.claimed_at, runs.c.started_at), workspace_id, f)
    result = await conn.execute(
        stmt.where(runs.c.claimed_at.is_not(None)).order_by(runs.c.claimed_at.desc()).limit(limit)
    )
    return [(r[0], r[1], r[2]) for r in result]


async def observe_latest_activity(conn: AsyncConnection, workspace_id: str, f: ObserveFilters) -> datetime | None:
    result = await conn.execute(
        sa.select(tasks.c.last_activity_at)
        .where(*_task_where(workspace_id, f))
        .order_by(tasks.c.last_activity_at.desc())
        .limit(1)
    )
    value: datetime | None = result.scalar_one_or_none()
    return value
