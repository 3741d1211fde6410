"""Per-person triage (read, dismiss, archive) and the inbox lanes. The rules are in ``domain.triage``."""

from __future__ import annotations

from workloom.domain import triage as rules
from workloom.domain.errors import FieldError, NotFound, ValidationFailed
from workloom.domain.models import Task
from workloom.domain.triage import LANES, Inbox, InboxFilters, InboxItem, LaneCount, TriageAction, TriageState
from workloom.engine.unit import Unit
from workloom.store import queues as queue_store
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store import triage as store
from workloom.store.triage import InboxScope

MAX_LIMIT = 500


async def _task(u: Unit, task_id: str) -> Task:
    task = await task_store.task_get(u.conn, u.workspace_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


async def mark(u: Unit, task_id: str, action: TriageAction) -> TriageState:
    """Mark a task read, dismissed or archived for the calling principal's actor (see ``domain.triage``)."""
    u.principal.require("tasks.read")
    if action not in rules.TRIAGE_ACTIONS:
        raise ValidationFailed(
            f"unknown triage action {action!r}",
            [FieldError("action", f"must be one of {', '.join(rules.TRIAGE_ACTIONS)}")],
        )
    task = await _task(u, task_id)
    actor = u.principal.actor
    current = await store.triage_get(u.conn, task.id, actor) or rules.TriageMarks()
    marks = rules.marked(current, action, u.now, task.last_activity_at)
    await store.triage_upsert(u.conn, workspace_id=u.workspace_id, task_id=task.id, actor=actor, marks=marks)
    return rules.state(task.id, actor, marks, task.last_activity_at)


async def get(u: Unit, task_id: str) -> TriageState:
    """The calling actor's triage of a task (never marked: unread, nothing set)."""
    task = await _task(u, task_id)
    marks = await store.triage_get(u.conn, task.id, u.principal.actor) or rules.TriageMarks()
    return rules.state(task.id, u.principal.actor, marks, task.last_activity_at)


async def inbox(u: Unit, filters: InboxFilters | None = None) -> Inbox:
    """The caller's inbox: items of each lane (``filters.lane`` only, if set), at most ``limit`` per
    lane, most recent activity first; and per-lane counts under every filter but ``lane``/``unread``."""
    filters = filters or InboxFilters()
    if filters.lane is not None and filters.lane not in LANES:
        raise ValidationFailed("unknown lane", [FieldError("lane", f"must be one of {', '.join(LANES)}")])
    if not 1 <= filters.limit <= MAX_LIMIT:
        raise ValidationFailed("limit is out of range", [FieldError("limit", f"must be 1 to {MAX_LIMIT}")])
    caller = u.principal.actor
    scope = InboxScope(filters.owner_kind, filters.owner_ref, filters.search, filters.scope)
    if filters.queue is not None:
        found = await queue_store.queue_ids_by_name(u.conn, u.workspace_id, [filters.queue])
        if not found:
            return _empty(filters)
        scope = InboxScope(scope.owner_kind, scope.owner_ref, scope.search, scope.scope, found[filters.queue])
    counts = await store.inbox_lane_counts(u.conn, u.workspace_id, caller, scope)
    lanes = [LaneCount(lane, *counts.get(lane, (0, 0))) for lane in LANES]
    items: list[InboxItem] = []
    for lane in [filters.lane] if filters.lane else LANES:
        if counts.get(lane, (0, 0))[0] == 0:
            continue
        for task, marks in await store.inbox_items(
            u.conn, u.workspace_id, caller, lane, scope, unread=filters.unread, limit=filters.limit
        ):
            state = rules.state(task.id, caller, marks, task.last_activity_at)
            items.append(InboxItem(task, lane, state, state.unread, rules.reason_of(task, lane), task.error, None))
    runs_of = await run_store.run_list_for_tasks(u.conn, [item.task.id for item in items])
    for item in items:
        task_runs = runs_of.get(item.task.id, [])
        item.run = task_runs[0] if task_runs else None
        if item.error is None and item.lane == "failed_runs":
            item.error = next((run.error for run in task_runs if run.error is not None), None)
    live = [c for c in lanes if c.lane != "archived"]
    return Inbox(
        items=items,
        lanes=lanes,
        total=sum(c.count for c in live),
        unread_total=sum(c.unread_count for c in live),
        archived_total=counts.get("archived", (0, 0))[0],
        filters=filters,
    )


def _empty(filters: InboxFilters) -> Inbox:
    return Inbox([], [LaneCount(lane, 0, 0) for lane in LANES], 0, 0, 0, filters)
