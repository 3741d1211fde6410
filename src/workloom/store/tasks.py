"""Named operations on tasks, their dependencies and their place in a tree."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import Task
from workloom.domain.priority import RANK
from workloom.domain.queries import ListQuery, Page, encode_cursor
from workloom.store import rows
from workloom.store.fast import (
    ById,
    SentRead,
    Statement,
    Statements,
    Write,
    one_of,
    read_soon,
    rows_after,
    workspace_filter,
)
from workloom.store.schema import queues, runs, task_dependencies, tasks

_WITH_QUEUE = sa.select(tasks, queues.c.name.label("queue_name")).select_from(
    tasks.outerjoin(queues, queues.c.id == tasks.c.queue_id)
)

# Public field name -> column, for filters and sorting.
COLUMNS: dict[str, sa.ColumnElement[Any]] = {
    "id": tasks.c.id,
    "status": tasks.c.status,
    "queue": queues.c.name,
    "priority": tasks.c.priority,
    "owner_kind": tasks.c.owner_kind,
    "owner_ref": tasks.c.owner_ref,
    "parent_task_id": tasks.c.parent_task_id,
    "created_at": tasks.c.created_at,
    "updated_at": tasks.c.updated_at,
    "due_at": tasks.c.due_at,
    "title": tasks.c.title,
    "identifier": tasks.c.number,
    "approval_state": tasks.c.approval_state,
    "draft": tasks.c.draft,
    "scope": tasks.c.scope,
    "origin_kind": tasks.c.origin_kind,
}


def task_values(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "workspace_id": task.workspace_id,
        "number": task.number,
        "title": task.title,
        "description": task.description,
        "queue_id": task.queue_id,
        "data": task.data,
        "output": task.output,
        "error": task.error,
        "priority": RANK[task.priority],
        "status": task.status,
        "blocked_reason": task.blocked_reason,
        "draft": task.draft,
        "approval_policy": task.approval_policy,
        "approval_state": task.approval_state,
        "parent_task_id": task.parent_task_id,
        "max_attempts": task.max_attempts,
        "attempts": task.attempts,
        "start_requested": task.start_requested,
        "due_at": task.due_at,
        "overdue_at": task.overdue_at,
        **rows.actor_columns("owner", task.owner),
        **rows.actor_columns("created_by", task.created_by),
        **rows.actor_columns("origin", task.origin),
        "metadata": task.metadata,
        "event_sequence": task.event_sequence,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "closed_at": task.closed_at,
        "last_activity_at": task.last_activity_at,
        "scope": task.scope,
    }


async def task_insert(conn: AsyncConnection, task: Task) -> None:
    await conn.execute(sa.insert(tasks).values(task_values(task)))


def _bound(names: tuple[str, ...], prefix: str = "") -> dict[str, sa.BindParameter[Any]]:
    return {n: sa.bindparam(prefix + n, type_=tasks.c[n].type) for n in names}


_INSERT = Statements(lambda _dialect, names: sa.insert(tasks).values(_bound(names)))


def task_inserts(many: list[Task]) -> list[Write]:
    """The insert of many new tasks, rows as given (no events, no settling), for ``fast.write_all``."""
    values = [task_values(task) for task in many]
    return [Write(_INSERT.for_columns(values[0]), values)] if values else []


def _get(by: str, lock: bool) -> Statement:
    stmt = _WITH_QUEUE.where(tasks.c.workspace_id == sa.bindparam("workspace_id"), tasks.c[by] == sa.bindparam("key"))
    return Statement(stmt.with_for_update(of=tasks) if lock else stmt)


_GET = {(by, lock): _get(by, lock) for by in ("id", "number") for lock in (False, True)}


async def task_get(conn: AsyncConnection, workspace_id: str, task_id: str, *, lock: bool = False) -> Task | None:
    """By id or by identifier (``WL-42``); ``lock`` takes the row lock for the rest of the transaction."""
    key: str | int = task_id
    by = "id"
    if task_id.upper().startswith("WL-") and task_id[3:].isdigit():
        by, key = "number", int(task_id[3:])
    row = await _GET[by, lock].first(conn, {"workspace_id": workspace_id, "key": key})
    return rows.task(row) if row else None


def _get_many(lock: bool) -> Statement:
    def build(dialect: str) -> sa.Select[Any]:
        stmt = _WITH_QUEUE.where(
            workspace_filter(tasks.c.workspace_id, "workspace_id"), one_of(tasks.c.id, "ids", dialect)
        )
        return stmt.order_by(tasks.c.id).with_for_update(of=tasks) if lock else stmt

    return Statement(build)


_GET_MANY = {False: _get_many(False), True: _get_many(True)}


async def task_get_many(conn: AsyncConnection, workspace_id: str, ids: list[str], *, lock: bool = False) -> list[Task]:
    """Tasks by id, in the order given (those that exist); ``lock`` takes their row locks, in id order."""
    if not ids:
        return []
    found = await _GET_MANY[lock].rows(conn, {"workspace_id": workspace_id, "ids": list(ids)})
    by_id = {t.id: t for t in (rows.task(row) for row in found)}
    return [by_id[i] for i in ids if i in by_id]


_UPDATE, _UPDATE_MANY = ById(tasks), ById(tasks, many=True)


async def task_update(
    conn: AsyncConnection, task_id: str, values: dict[str, Any], *, expected_status: str | None = None
) -> bool:
    """Write ``values``; with ``expected_status`` only if the row still has it. True if a row changed."""
    if "priority" in values and isinstance(values["priority"], str):
        values = {**values, "priority": RANK[values["priority"]]}
    return bool(await _UPDATE.execute(conn, task_id, values, expected_status))


def _advance(dialect: str) -> sa.Update:
    return (
        sa.update(tasks)
        .where(one_of(tasks.c.id, "ids", dialect))
        .values(
            event_sequence=tasks.c.event_sequence + sa.bindparam("count", type_=sa.Integer),
            last_activity_at=sa.bindparam("now", type_=tasks.c.last_activity_at.type),
        )
        .returning(tasks.c.id, tasks.c.event_sequence)
    )


_ADVANCE = Statement(_advance)


async def task_advance_sequences(conn: AsyncConnection, counts: dict[str, int], now: datetime) -> dict[str, int]:
    """Reserve ``counts[task]`` event numbers per task; returns each task's last reserved number.
    One statement per distinct count (a batch of claims or completions bumps every task by the same
    amount), in task id order so that concurrent writers lock rows in the same order.
    A task deleted in the same transaction keeps its history under the numbers it had."""
    by_count: dict[int, list[str]] = {}
    for task_id, count in counts.items():
        by_count.setdefault(count, []).append(task_id)
    last: dict[str, int] = {}
    for count, ids in sorted(by_count.items()):
        found = await _ADVANCE.rows(conn, {"ids": sorted(ids), "count": count, "now": now})
        last.update({row["id"]: int(row["event_sequence"]) for row in found})
        for task_id in ids:
            last.setdefault(task_id, count)
    return last


async def task_update_many(
    conn: AsyncConnection, task_ids: list[str], values: dict[str, Any], *, expected_status: str
) -> set[str]:
    """Write the same ``values`` to many tasks that still have ``expected_status``; the ids changed."""
    return await _UPDATE_MANY.execute_many(conn, sorted(task_ids), values, expected_status)


# What a claim writes to a ready task it moves (``:to_status``, ``:events`` numbers reserved).
_CLAIM_MOVE = {
    "status": sa.bindparam("to_status", type_=tasks.c.status.type),
    "updated_at": sa.bindparam("now", type_=tasks.c.updated_at.type),
    "last_activity_at": sa.bindparam("now", type_=tasks.c.updated_at.type),
    "blocked_reason": None,
    "event_sequence": tasks.c.event_sequence + sa.bindparam("events", type_=sa.Integer),
}


def _claim_ready(dialect: str) -> sa.Update:
    return (
        sa.update(tasks)
        .where(
            workspace_filter(tasks.c.workspace_id, "ws"),
            one_of(tasks.c.id, "ids", dialect),
            tasks.c.status == "ready",
        )
        .values(_CLAIM_MOVE)
        .returning(*tasks.c)
    )


_CLAIM_READY = Statement(_claim_ready)
_CLAIM_READY_BY_ID = Statement(
    sa.update(tasks).where(tasks.c.id == sa.bindparam("task_id"), tasks.c.status == "ready").values(_CLAIM_MOVE)
)


def task_claim_ready_writes(ids: list[str], *, status: str, now: datetime, events: int) -> Write:
    """``task_claim_ready`` of tasks known to be ready, as a write that must change each of them."""
    moves = [{"task_id": task_id, "to_status": status, "now": now, "events": events} for task_id in ids]
    return Write(_CLAIM_READY_BY_ID, moves, len(moves))


async def task_claim_ready(
    conn: AsyncConnection,
    workspace_id: str,
    ids: list[str],
    *,
    status: str,
    queue_name: str,
    now: datetime,
    events: int,
) -> dict[str, Task]:
    """Move those of ``ids`` that are ready to ``status``, reserving ``events`` event numbers on each, in one
    statement; the tasks moved, as they are now (``event_sequence``: the last number reserved)."""
    params = {"ws": workspace_id, "ids": sorted(ids), "to_status": status, "now": now, "events": events}
    return {row["id"]: rows.task(row, queue_name) for row in await _CLAIM_READY.rows(conn, params)}


_COMPLETE = Statement(
    sa.update(tasks)
    .where(tasks.c.id == sa.bindparam("task_id"))
    .values(
        output=sa.bindparam("output", type_=tasks.c.output.type),
        attempts=sa.bindparam("attempts"),
        status=sa.bindparam("status"),
        updated_at=sa.bindparam("updated_at"),
        blocked_reason=sa.bindparam("blocked_reason", type_=sa.String),
        closed_at=sa.bindparam("closed_at"),
        last_activity_at=sa.bindparam("last_activity_at", type_=tasks.c.last_activity_at.type),
        event_sequence=tasks.c.event_sequence + sa.bindparam("events", type_=sa.Integer),
    )
)


async def task_complete_many(conn: AsyncConnection, rows_: list[dict[str, Any]]) -> None:
    """Close many tasks (locked by the caller) in one round trip: task_id, output, attempts, status,
    updated_at, last_activity_at, blocked_reason, closed_at, and ``events``: how many event numbers to reserve."""
    await _COMPLETE.many(conn, rows_)


def task_complete_writes(rows_: list[dict[str, Any]], *, changes: int | None = None) -> Write:
    """``task_complete_many`` as a write, to be sent with others; ``changes``: how many rows it must change."""
    return Write(_COMPLETE, rows_, changes)


async def task_delete(conn: AsyncConnection, task_id: str) -> None:
    await conn.execute(sa.delete(tasks).where(tasks.c.id == task_id))


async def task_list(conn: AsyncConnection, workspace_id: str, query: ListQuery) -> Page[Task]:
    where: list[sa.ColumnElement[bool]] = [tasks.c.workspace_id == workspace_id]
    for flt in query.filters:
        column = COLUMNS[flt.field]
        value = flt.value
        if flt.field == "priority":
            value = [RANK[v] for v in value] if isinstance(value, list) else RANK[value]
        if flt.op == "eq":
            where.append(column.is_(None) if value is None else column == value)
        elif flt.op == "in":
            where.append(column.in_(value))
        elif flt.op == "gte":
            where.append(column >= value)
        elif flt.op == "lte":
            where.append(column <= value)
    if query.search:
        where.append(search_clause(query.search))
    base = _WITH_QUEUE.where(*where)
    total = None
    if query.count:
        total = int(
            (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(base.with_only_columns(tasks.c.id).subquery())
                )
            ).scalar_one()
        )
    order: list[tuple[sa.ColumnElement[Any], bool]] = [(COLUMNS[k.field], k.descending) for k in query.sort]
    order.append((tasks.c.id, order[-1][1] if order else False))
    if query.after is not None:
        base = base.where(_after(order, query.after))
    stmt = base.order_by(*[col.desc() if desc else col.asc() for col, desc in order]).limit(query.limit + 1)
    found = [rows.task(row) for row in (await conn.execute(stmt)).mappings()]
    next_cursor = None
    if len(found) > query.limit:
        found = found[: query.limit]
        last = found[-1]
        next_cursor = encode_cursor([_sort_value(last, k.field) for k in query.sort] + [last.id])
    return Page(items=found, next_cursor=next_cursor, total=total)


def search_clause(text: str) -> sa.ColumnElement[bool]:
    """An identifier (``WL-42``) finds that task; any other text, titles containing it (any case)."""
    term = text.strip()
    if term.upper().startswith("WL-") and term[3:].isdigit():
        return tasks.c.number == int(term[3:])
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(tasks.c.title).like(f"%{escaped.lower()}%", escape="\\")


def _sort_value(task: Task, field: str) -> Any:
    if field == "priority":
        return RANK[task.priority]
    if field == "identifier":
        return task.number
    return getattr(task, field)


def _after(order: list[tuple[sa.ColumnElement[Any], bool]], values: list[Any]) -> sa.ColumnElement[bool]:
    """Rows strictly after ``values`` in the given order: (a > x) or (a = x and b > y) or …"""
    if len(values) != len(order):
        raise ValueError("cursor does not match sort")
    clauses = []
    for i, (column, descending) in enumerate(order):
        equal = [order[j][0] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        clauses.append(sa.and_(*equal, beyond))
    return sa.or_(*clauses)


async def children_ids(conn: AsyncConnection, workspace_id: str, parent_ids: list[str]) -> list[str]:
    if not parent_ids:
        return []
    result = await conn.execute(
        sa.select(tasks.c.id)
        .where(tasks.c.workspace_id == workspace_id, tasks.c.parent_task_id.in_(parent_ids))
        .order_by(tasks.c.number)
    )
    return list(result.scalars())


async def task_child_counts(conn: AsyncConnection, workspace_id: str, task_ids: list[str]) -> dict[str, int]:
    if not task_ids:
        return {}
    result = await conn.execute(
        sa.select(tasks.c.parent_task_id, sa.func.count())
        .where(tasks.c.workspace_id == workspace_id, tasks.c.parent_task_id.in_(task_ids))
        .group_by(tasks.c.parent_task_id)
    )
    return {row[0]: int(row[1]) for row in result}


async def dependency_counts(conn: AsyncConnection, workspace_id: str, task_ids: list[str]) -> dict[str, int]:
    if not task_ids:
        return {}
    result = await conn.execute(
        sa.select(task_dependencies.c.task_id, sa.func.count())
        .where(task_dependencies.c.workspace_id == workspace_id, task_dependencies.c.task_id.in_(task_ids))
        .group_by(task_dependencies.c.task_id)
    )
    return {row[0]: int(row[1]) for row in result}


async def dependency_records(
    conn: AsyncConnection, workspace_id: str, task_ids: list[str]
) -> dict[str, list[tuple[str, datetime]]]:
    """For each task, (the task it depends on, when the edge was made), oldest edge first."""
    if not task_ids:
        return {}
    result = await conn.execute(
        sa.select(task_dependencies.c.task_id, task_dependencies.c.depends_on_task_id, task_dependencies.c.created_at)
        .where(task_dependencies.c.workspace_id == workspace_id, task_dependencies.c.task_id.in_(task_ids))
        .order_by(task_dependencies.c.created_at, task_dependencies.c.depends_on_task_id)
    )
    out: dict[str, list[tuple[str, datetime]]] = {i: [] for i in task_ids}
    for row in result:
        out[row.task_id].append((row.depends_on_task_id, row.created_at))
    return out


async def task_max_attempts(conn: AsyncConnection, workspace_id: str, task_ids: list[str]) -> dict[str, int | None]:
    """Each task's attempt limit: its own, else its queue's; None for a task with neither."""
    if not task_ids:
        return {}
    result = await conn.execute(
        sa.select(tasks.c.id, sa.func.coalesce(tasks.c.max_attempts, queues.c.max_attempts))
        .select_from(tasks.outerjoin(queues, queues.c.id == tasks.c.queue_id))
        .where(tasks.c.workspace_id == workspace_id, tasks.c.id.in_(task_ids))
    )
    return {row[0]: (int(row[1]) if row[1] is not None else None) for row in result}


async def dependency_insert(
    conn: AsyncConnection, *, workspace_id: str, task_id: str, depends_on: str, now: datetime
) -> bool:
    exists = (
        await conn.execute(
            sa.select(task_dependencies.c.task_id).where(
                task_dependencies.c.task_id == task_id, task_dependencies.c.depends_on_task_id == depends_on
            )
        )
    ).first()
    if exists:
        return False
    await conn.execute(
        sa.insert(task_dependencies).values(
            workspace_id=workspace_id, task_id=task_id, depends_on_task_id=depends_on, kind="blocks", created_at=now
        )
    )
    return True


async def dependency_delete(conn: AsyncConnection, task_id: str, depends_on: str) -> bool:
    result = await conn.execute(
        sa.delete(task_dependencies).where(
            task_dependencies.c.task_id == task_id, task_dependencies.c.depends_on_task_id == depends_on
        )
    )
    return bool(result.rowcount)


async def dependency_targets(conn: AsyncConnection, task_ids: list[str]) -> dict[str, list[str]]:
    """For each task, the tasks it depends on."""
    if not task_ids:
        return {}
    result = await conn.execute(
        sa.select(task_dependencies.c.task_id, task_dependencies.c.depends_on_task_id)
        .where(task_dependencies.c.task_id.in_(task_ids))
        .order_by(task_dependencies.c.created_at, task_dependencies.c.depends_on_task_id)
    )
    out: dict[str, list[str]] = {i: [] for i in task_ids}
    for row in result:
        out[row.task_id].append(row.depends_on_task_id)
    return out


_DEPENDENTS = Statement(
    sa.select(task_dependencies.c.task_id).where(task_dependencies.c.depends_on_task_id == sa.bindparam("task_id"))
)


async def dependency_dependents(conn: AsyncConnection, task_id: str) -> list[str]:
    return [row["task_id"] for row in await _DEPENDENTS.rows(conn, {"task_id": task_id})]


async def dependency_dependents_many(conn: AsyncConnection, task_ids: list[str]) -> set[str]:
    """Which of ``task_ids`` some task depends on."""
    if not task_ids:
        return set()
    return {row["depends_on_task_id"] for row in await _DEPENDED_ON.rows(conn, {"ids": task_ids})}


async def dependency_dependents_after(conn: AsyncConnection, writes: list[Write], task_ids: list[str]) -> set[str]:
    """``writes``, then ``dependency_dependents_many`` (which must not depend on them): one round trip."""
    return _depended_on_ids(await rows_after(conn, writes, _DEPENDED_ON, {"ids": task_ids}))


def dependency_dependents_soon(conn: AsyncConnection, task_ids: list[str]) -> Awaitable[set[str]] | None:
    """Which of ``task_ids`` some task depends on, read on SQLite's thread without waiting (``fast.read_soon``):
    await it for the ids. None on PostgreSQL."""
    read = read_soon(conn, _DEPENDED_ON, {"ids": task_ids})
    return _depended_on(read) if read is not None else None


async def _depended_on(read: SentRead) -> set[str]:
    return _depended_on_ids(await read.rows())


def _depended_on_ids(found: list[dict[str, Any]]) -> set[str]:
    return {row["depends_on_task_id"] for row in found}


_DEPENDED_ON = Statement(
    lambda dialect: (
        sa.select(task_dependencies.c.depends_on_task_id)
        .where(one_of(task_dependencies.c.depends_on_task_id, "ids", dialect))
        .distinct()
    )
)


async def dependency_open_count(conn: AsyncConnection, task_id: str) -> int:
    dep = tasks.alias("dep")
    result = await conn.execute(
        sa.select(sa.func.count())
        .select_from(task_dependencies.join(dep, dep.c.id == task_dependencies.c.depends_on_task_id))
        .where(task_dependencies.c.task_id == task_id, dep.c.status != "completed")
    )
    return int(result.scalar_one())


async def task_counts_by_status(conn: AsyncConnection) -> list[tuple[str, str | None, str, int]]:
    """(workspace_id, queue name, status, count) for every combination present: for metrics."""
    result = await conn.execute(
        sa.select(tasks.c.workspace_id, queues.c.name, tasks.c.status, sa.func.count())
        .select_from(tasks.outerjoin(queues, queues.c.id == tasks.c.queue_id))
        .group_by(tasks.c.workspace_id, queues.c.name, tasks.c.status)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in result]


async def task_ids_ready_without_run(conn: AsyncConnection, workspace_id: str, queue_id: str) -> list[str]:
    """Ready tasks of a queue that have no active run: what a queue switched to automatic start owes runs."""
    active = sa.select(runs.c.id).where(
        runs.c.task_id == tasks.c.id, runs.c.status.in_(("queued", "claimed", "starting", "running"))
    )
    result = await conn.execute(
        sa.select(tasks.c.id)
        .where(
            tasks.c.workspace_id == workspace_id,
            tasks.c.queue_id == queue_id,
            tasks.c.status == "ready",
            ~active.exists(),
        )
        .order_by(tasks.c.number)
    )
    return list(result.scalars())
