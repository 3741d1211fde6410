"""Named operations on per-person triage and the inbox built from it.

The lane of a task is one SQL ``CASE`` written from the same rule data as ``domain.triage.lane_of``;
the live lanes are found through indexed task columns (status, pending approval, owner), the archived
lane through the caller's own triage rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import Actor
from workloom.domain.models import Task
from workloom.domain.task_states import FINAL_TASK_STATUSES
from workloom.domain.triage import (
    APPROVAL_PENDING,
    BLOCKED_LANE_STATUSES,
    FAILED_LANE_STATUSES,
    MY_WORK_STATUSES,
    Lane,
    TriageMarks,
)
from workloom.store import rows
from workloom.store.schema import inline, inline_all, queues, task_triage, tasks
from workloom.store.tasks import search_clause

_CLOSED_NOT_FAILED = tuple(sorted(FINAL_TASK_STATUSES - set(FAILED_LANE_STATUSES)))


@dataclass(frozen=True, slots=True)
class InboxScope:
    """The task filters an inbox applies to every lane."""

    owner_kind: str | None = None
    owner_ref: str | None = None
    search: str | None = None
    scope: str | None = None
    queue_id: str | None = None


def _marks(row: Any) -> TriageMarks:
    return TriageMarks(
        read_at=row["tr_read_at"],
        dismissed_at=row["tr_dismissed_at"],
        archived_at=row["tr_archived_at"],
        last_seen_activity_at=row["tr_last_seen_activity_at"],
        updated_at=row["tr_updated_at"],
    )


_TRIAGE_COLUMNS = [
    task_triage.c.read_at.label("tr_read_at"),
    task_triage.c.dismissed_at.label("tr_dismissed_at"),
    task_triage.c.archived_at.label("tr_archived_at"),
    task_triage.c.last_seen_activity_at.label("tr_last_seen_activity_at"),
    task_triage.c.updated_at.label("tr_updated_at"),
]


async def triage_get(conn: AsyncConnection, task_id: str, actor: Actor) -> TriageMarks | None:
    row = (
        (
            await conn.execute(
                sa.select(*_TRIAGE_COLUMNS).where(
                    task_triage.c.task_id == task_id,
                    task_triage.c.actor_kind == actor.kind,
                    task_triage.c.actor_ref == actor.ref,
                )
            )
        )
        .mappings()
        .first()
    )
    return _marks(row) if row else None


async def triage_upsert(
    conn: AsyncConnection, *, workspace_id: str, task_id: str, actor: Actor, marks: TriageMarks
) -> None:
    values = {
        "workspace_id": workspace_id,
        "task_id": task_id,
        "actor_kind": actor.kind,
        "actor_ref": actor.ref,
        "read_at": marks.read_at,
        "dismissed_at": marks.dismissed_at,
        "archived_at": marks.archived_at,
        "last_seen_activity_at": marks.last_seen_activity_at,
        "updated_at": marks.updated_at,
    }
    changed = {k: v for k, v in values.items() if k not in ("workspace_id", "task_id", "actor_kind", "actor_ref")}
    keys = ["task_id", "actor_kind", "actor_ref"]
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(task_triage).values(values).on_conflict_do_update(index_elements=keys, set_=changed)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(task_triage).values(values).on_conflict_do_update(index_elements=keys, set_=changed)
    await conn.execute(stmt)


def _owned_by(caller: Actor) -> sa.ColumnElement[bool]:
    return sa.and_(tasks.c.owner_kind == caller.kind, tasks.c.owner_ref == caller.ref)


def _lane(caller: Actor) -> sa.ColumnElement[Any]:
    """The live lane of a task for ``caller``: ``domain.triage.lane_of`` without the archived case."""
    return sa.case(
        (tasks.c.status.in_(inline_all(FAILED_LANE_STATUSES)), sa.literal("failed_runs")),
        (tasks.c.status.in_(inline_all(_CLOSED_NOT_FAILED)), sa.null()),
        (
            sa.and_(tasks.c.status != "draft", tasks.c.approval_state == inline(APPROVAL_PENDING)),
            sa.literal("approvals"),
        ),
        (tasks.c.status.in_(inline_all(BLOCKED_LANE_STATUSES)), sa.literal("blocked")),
        (sa.and_(_owned_by(caller), tasks.c.status.in_(inline_all(MY_WORK_STATUSES))), sa.literal("my_work")),
        else_=sa.null(),
    )


def _candidates(caller: Actor) -> sa.ColumnElement[bool]:
    """A superset of the tasks in some live lane, in terms the task indexes answer."""
    return sa.or_(
        tasks.c.status.in_(inline_all(FAILED_LANE_STATUSES + BLOCKED_LANE_STATUSES)),
        tasks.c.approval_state == inline(APPROVAL_PENDING),
        sa.and_(_owned_by(caller), tasks.c.status.in_(inline_all(MY_WORK_STATUSES))),
    )


def _in_lane(lane: Lane, caller: Actor) -> sa.ColumnElement[bool]:
    """Exactly the tasks ``_lane`` puts in ``lane``, spelled so that each lane reads only its own rows."""
    approvals = sa.and_(
        tasks.c.status.not_in(inline_all((*FAILED_LANE_STATUSES, *_CLOSED_NOT_FAILED, "draft"))),
        tasks.c.approval_state == inline(APPROVAL_PENDING),
    )
    if lane == "failed_runs":
        return tasks.c.status.in_(inline_all(FAILED_LANE_STATUSES))
    if lane == "approvals":
        return approvals
    if lane == "blocked":
        return sa.and_(
            tasks.c.status.in_(inline_all(BLOCKED_LANE_STATUSES)), tasks.c.approval_state != inline(APPROVAL_PENDING)
        )
    assert lane == "my_work"
    return sa.and_(
        _owned_by(caller),
        tasks.c.status.in_(inline_all(MY_WORK_STATUSES)),
        tasks.c.status.not_in(inline_all(FAILED_LANE_STATUSES + BLOCKED_LANE_STATUSES)),
        sa.not_(approvals),
    )


def _unread() -> sa.ColumnElement[int]:
    """1 if the task had activity the caller has not seen (``domain.triage.is_unread``), else 0."""
    seen = task_triage.c.last_seen_activity_at
    return sa.case((sa.or_(seen.is_(None), tasks.c.last_activity_at > seen), 1), else_=0)


def _dismissed() -> sa.ColumnElement[bool]:
    """``domain.triage.is_dismissed``: dismissed, and nothing happened since."""
    seen = task_triage.c.last_seen_activity_at
    return sa.and_(task_triage.c.dismissed_at.is_not(None), seen.is_not(None), tasks.c.last_activity_at <= seen)


def _scope_filters(workspace_id: str, scope: InboxScope) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [tasks.c.workspace_id == workspace_id]
    if scope.owner_kind is not None:
        where.append(tasks.c.owner_kind == scope.owner_kind)
    if scope.owner_ref is not None:
        where.append(tasks.c.owner_ref == scope.owner_ref)
    if scope.scope is not None:
        where.append(tasks.c.scope == scope.scope)
    if scope.queue_id is not None:
        where.append(tasks.c.queue_id == scope.queue_id)
    if scope.search:
        where.append(search_clause(scope.search))
    return where


def _triage_join(caller: Actor, *, outer: bool) -> sa.FromClause:
    on = sa.and_(
        task_triage.c.task_id == tasks.c.id,
        task_triage.c.actor_kind == caller.kind,
        task_triage.c.actor_ref == caller.ref,
    )
    return tasks.join(task_triage, on, isouter=outer)


def _live_where(workspace_id: str, caller: Actor, scope: InboxScope) -> list[sa.ColumnElement[bool]]:
    return [
        *_scope_filters(workspace_id, scope),
        _candidates(caller),
        task_triage.c.archived_at.is_(None),
        sa.not_(_dismissed()),
    ]


def _archived_where(workspace_id: str, caller: Actor, scope: InboxScope) -> list[sa.ColumnElement[bool]]:
    return [
        *_scope_filters(workspace_id, scope),
        task_triage.c.workspace_id == workspace_id,
        task_triage.c.archived_at.is_not(None),
    ]


async def inbox_lane_counts(
    conn: AsyncConnection, workspace_id: str, caller: Actor, scope: InboxScope
) -> dict[str, tuple[int, int]]:
    """(count, unread count) per lane that has any item."""
    lane = _lane(caller).label("lane")
    live = (
        sa.select(lane, _unread().label("unread"))
        .select_from(_triage_join(caller, outer=True))
        .where(*_live_where(workspace_id, caller, scope))
        .subquery()
    )
    result = await conn.execute(
        sa.select(live.c.lane, sa.func.count(), sa.func.sum(live.c.unread))
        .where(live.c.lane.is_not(None))
        .group_by(live.c.lane)
    )
    counts = {row[0]: (int(row[1]), int(row[2] or 0)) for row in result}
    archived = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.sum(_unread()))
            .select_from(_triage_join(caller, outer=False))
            .where(*_archived_where(workspace_id, caller, scope))
        )
    ).one()
    if archived[0]:
        counts["archived"] = (int(archived[0]), int(archived[1] or 0))
    return counts


async def inbox_items(
    conn: AsyncConnection,
    workspace_id: str,
    caller: Actor,
    lane: Lane,
    scope: InboxScope,
    *,
    unread: bool | None,
    limit: int,
) -> list[tuple[Task, TriageMarks]]:
    """A lane's items, most recent activity first."""
    joined = _triage_join(caller, outer=lane != "archived").outerjoin(queues, queues.c.id == tasks.c.queue_id)
    if lane == "archived":
        where = _archived_where(workspace_id, caller, scope)
    else:
        where = [
            *_scope_filters(workspace_id, scope),
            _in_lane(lane, caller),
            task_triage.c.archived_at.is_(None),
            sa.not_(_dismissed()),
        ]
    if unread is not None:
        where.append(_unread() == sa.literal(1 if unread else 0))
    stmt = (
        sa.select(tasks, queues.c.name.label("queue_name"), *_TRIAGE_COLUMNS)
        .select_from(joined)
        .where(*where)
        .order_by(tasks.c.last_activity_at.desc(), tasks.c.id.desc())
        .limit(limit)
    )
    found = []
    for row in (await conn.execute(stmt)).mappings():
        found.append((rows.task(row), _marks(row)))
    return found
