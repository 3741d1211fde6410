"""Task use cases: create, read, change, publish, approve, cancel, dependencies and trees."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workloom.domain import task_states
from workloom.domain.actors import Actor
from workloom.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from workloom.domain.ids import new_id
from workloom.domain.models import TASK_SCOPES, Queue, Run, Task
from workloom.domain.priority import RANK
from workloom.domain.queries import ListQuery, Page
from workloom.domain.readiness import Facts, initial_approval_state
from workloom.domain.readiness import settle as decide
from workloom.engine import queues, runs
from workloom.engine.events import record
from workloom.engine.lifecycle import move_run, move_task, new_run, settle, wake_claimers
from workloom.engine.unit import Unit, reserve_numbers
from workloom.store import runs as run_store
from workloom.store import tasks as store
from workloom.store import timers as timer_store
from workloom.store.timers import Timer


@dataclass(slots=True)
class NewTask:
    title: str
    description: str | None = None
    queue: str | None = None
    data: Any = None
    priority: str = "medium"
    max_attempts: int | None = None
    draft: bool = False
    parent_task_id: str | None = None
    depends_on: list[str] = field(default_factory=list)
    approval_policy: str = "none"
    due_at: datetime | None = None
    owner: Actor | None = None
    metadata: Any = None
    scope: str = "workspace"


@dataclass(slots=True)
class TreeNode:
    task: Task
    children: list[TreeNode]


PATCHABLE = (
    "title",
    "description",
    "priority",
    "data",
    "metadata",
    "due_at",
    "owner",
    "max_attempts",
    "queue",
    "approval_policy",
    "scope",
)


async def get(u: Unit, task_id: str, *, lock: bool = False) -> Task:
    task = await store.task_get(u.conn, u.workspace_id, task_id, lock=lock)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    task.depends_on = (await store.dependency_targets(u.conn, [task.id]))[task.id]
    return task


def _check_scope(scope: str) -> None:
    if scope not in TASK_SCOPES:
        raise ValidationFailed(
            f"scope {scope!r} is not known", [FieldError("scope", f"must be one of {', '.join(TASK_SCOPES)}")]
        )


MAX_BATCH = 1000


async def create(u: Unit, new: NewTask) -> Task:
    u.principal.require("tasks.write")
    _check_scope(new.scope)
    if _simple(new):
        return (await _create_simple(u, [new]))[0]
    return await _create_one(u, new)


async def create_many(u: Unit, many: list[NewTask]) -> list[Task]:
    """Create tasks in one unit, all or none, numbered in the order given. Tasks without a parent,
    dependencies or due date (the common case) are written a few statements for the whole batch;
    a field error names the task by its index (``tasks.<i>.<field>``)."""
    u.principal.require("tasks.write")
    if len(many) > MAX_BATCH:
        raise ValidationFailed(
            f"at most {MAX_BATCH} tasks per batch", [FieldError("tasks", f"at most {MAX_BATCH} items")]
        )
    for i, new in enumerate(many):
        with _indexed(i):
            _check_scope(new.scope)
    if all(_simple(new) for new in many):
        return await _create_simple(u, many)
    created = []
    for i, new in enumerate(many):
        with _indexed(i):
            created.append(await _create_one(u, new))
    return created


class _indexed:
    """Re-raise a field error of the ``i``-th task of a batch as ``tasks.<i>.<field>``."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ValidationFailed):
            exc.errors = [FieldError(f"tasks.{self.i}.{e.field}", e.message) for e in exc.errors] or [
                FieldError(f"tasks.{self.i}", exc.detail)
            ]


def _simple(new: NewTask) -> bool:
    return new.parent_task_id is None and not new.depends_on and new.due_at is None


async def _create_simple(u: Unit, many: list[NewTask]) -> list[Task]:
    """Tasks that settle on facts known up front: their rows inserted in their settled state (with their
    event count), their runs, and the events the step-by-step path would have recorded (task.created,
    task.ready or task.blocked, run.queued), all at the unit's end, where their numbers are reserved too:
    one reservation and one write for every create that commits with this one."""
    names = list(dict.fromkeys(new.queue for new in many if new.queue))
    by_name = {name: await queues.ensure(u, name) for name in names}
    if len(many) <= PIPELINED_PART or not u.can_flush_soon:
        return await _create_part(u, many, by_name)
    created: list[Task] = []
    try:
        for start in range(0, len(many), PIPELINED_PART):
            if start:
                await u.flush_soon()  # the part before is written while this one is built
            created += await _create_part(u, many[start : start + PIPELINED_PART], by_name)
        await u.sent()  # nothing on its way once this returns: the last part is written at the unit's end
    except BaseException:
        with contextlib.suppress(Exception):
            await u.sent()  # the connection is free again before the transaction is rolled back
        raise
    return created


# A large batch of creates is built and written in parts of this many, each part's rows inserted while the
# next part is built (``Unit.flush_soon``), the loop let go every ``YIELD_EVERY`` tasks to move that write
# along. In-process here, a batch of 1,000 on PostgreSQL (~78 ms of server Python, ~65 to 90 ms of PostgreSQL,
# one after the other in one statement) took 142 ms in one part, 125 ms in parts of 250, 158 in parts of 125
# (medians of 15, alternating): what PostgreSQL does per row now sets the pace.
PIPELINED_PART = 250
YIELD_EVERY = 10


async def _create_part(u: Unit, many: list[NewTask], by_name: dict[str, Queue]) -> list[Task]:
    """``_create_simple`` of tasks whose queues are ``by_name``: their rows held for the next flush."""
    created: list[Task] = []
    new_runs = []
    for i, new in enumerate(many):
        if u.sending is not None and i % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # the loop moves the part being written along: its number reservation, its send
        queue = by_name[new.queue] if new.queue else None
        task = _new_task(u, new, 0, queue)  # numbered at the unit's end
        run: Run | None = None
        events: list[tuple[str, str | None, dict[str, Any]]] = [("task.created", None, _created_payload(task, []))]
        if not new.draft:
            outcome = decide(
                Facts(
                    dependencies_open=0,
                    approval_policy=task.approval_policy,
                    approval_state=task.approval_state,
                    has_queue=queue is not None,
                    queue_starts_automatically=queue is not None and queue.start_mode == "auto",
                    start_requested=False,
                )
            )
            action: task_states.TaskAction = "publish_blocked" if outcome.blocked_reason else "publish_ready"
            target = task_states.apply("draft", action)
            events.append((f"task.{target}", None, {"from_status": "draft", "status": target}))
            task.status = target
            task.blocked_reason = outcome.blocked_reason
            if target == "ready" and outcome.enqueue_run and queue is not None:
                run = new_run(u, task, queue, attempt=1, available_at=u.now)
                events.append(
                    (
                        "run.queued",
                        run.id,
                        {"attempt": 1, "queue": queue.name, "available_at": u.now.isoformat()},
                    )
                )
        task.event_sequence = len(events)
        for number, (kind, run_id, payload) in enumerate(events, start=1):
            await record(u, kind, task_id=task.id, run_id=run_id, payload=payload, task_sequence=number)
        if run is not None and queue is not None:
            handed = await runs.hand_off(u, task, run, queue)
            if handed is None:
                wake_claimers(u, queue.id)
            else:
                run = handed[0]
            new_runs.append(run)
        created.append(task)
    # The rows go with their events, in one round trip (PostgreSQL) at the unit's end.
    u.create_later(created, run_store.run_inserts(new_runs))
    return created


def _new_task(u: Unit, new: NewTask, number: int, queue: Queue | None) -> Task:
    return Task(
        id=new_id("task"),
        workspace_id=u.workspace_id,
        number=number,
        title=new.title,
        description=new.description,
        queue_id=queue.id if queue else None,
        queue=queue.name if queue else None,
        data=new.data,
        output=None,
        error=None,
        priority=new.priority,
        status="draft",
        blocked_reason=None,
        draft=new.draft,
        approval_policy=new.approval_policy,
        approval_state=initial_approval_state(new.approval_policy),
        parent_task_id=new.parent_task_id,
        max_attempts=new.max_attempts,
        attempts=0,
        start_requested=False,
        due_at=new.due_at,
        overdue_at=None,
        owner=new.owner,
        created_by=u.principal.actor,
        origin=u.principal.origin,
        metadata=new.metadata,
        event_sequence=0,
        created_at=u.now,
        updated_at=u.now,
        closed_at=None,
        last_activity_at=u.now,
        scope=new.scope,
    )


def _created_payload(task: Task, depends_on: list[str]) -> dict[str, Any]:
    return {
        "title": task.title,
        "queue": task.queue,
        "priority": task.priority,
        "draft": task.draft,
        "parent_task_id": task.parent_task_id,
        "depends_on": depends_on,
        "scope": task.scope,
    }


async def _create_one(u: Unit, new: NewTask) -> Task:
    if new.parent_task_id is not None:
        parent = await _existing(u, new.parent_task_id, "parent_task_id")
        new.parent_task_id = parent.id
    depends_on = [(await _existing(u, dep, "depends_on")).id for dep in dict.fromkeys(new.depends_on)]
    queue = await queues.ensure(u, new.queue) if new.queue else None
    number = await _next_number(u)
    task = _new_task(u, new, number, queue)
    await store.task_insert(u.conn, task)
    for dep in depends_on:
        await store.dependency_insert(u.conn, workspace_id=u.workspace_id, task_id=task.id, depends_on=dep, now=u.now)
    await record(
        u,
        "task.created",
        task_id=task.id,
        payload=_created_payload(task, depends_on),
    )
    if task.due_at is not None:
        await _set_due_timer(u, task, task.due_at)
    if not new.draft:
        open_dependencies = await store.dependency_open_count(u.conn, task.id) if depends_on else 0
        task = await settle(u, task, created_with=(queue, open_dependencies))
    task.depends_on = depends_on
    return task


async def _next_number(u: Unit) -> int:
    """Called as late as possible in a create: inside the transaction (SQLite) the workspace row stays
    locked until commit."""
    return (await reserve_numbers(u, u.workspace_id, 1))[0]


async def _existing(u: Unit, task_id: str, field_name: str) -> Task:
    task = await store.task_get(u.conn, u.workspace_id, task_id)
    if task is None:
        raise ValidationFailed(
            f"{field_name} names a task that does not exist",
            [FieldError(field_name, f"task {task_id!r} not found in this workspace")],
        )
    return task


async def _set_due_timer(u: Unit, task: Task, due_at: datetime) -> None:
    await timer_store.timer_delete_for_task(u.conn, task.id, "due")
    await timer_store.timer_insert(
        u.conn,
        Timer(id=new_id("tmr"), workspace_id=u.workspace_id, kind="due", task_id=task.id, run_id=None, fire_at=due_at),
        u.now,
    )


async def list_tasks(u: Unit, query: ListQuery) -> Page[Task]:
    page = await store.task_list(u.conn, u.workspace_id, query)
    deps = await store.dependency_targets(u.conn, [t.id for t in page.items])
    for task in page.items:
        task.depends_on = deps.get(task.id, [])
    return page


async def patch(u: Unit, task_id: str, changes: dict[str, Any]) -> Task:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task_states.is_final(task.status):
        raise Conflict(f"task {task.identifier} is {task.status}; a closed task cannot be changed")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "owner":
            values["owner_kind"] = value.kind if value else None
            values["owner_ref"] = value.ref if value else None
        elif name == "queue":
            await _move_queue(u, task, value, values)
        elif name == "approval_policy":
            if task.status != "draft":
                raise Conflict("approval_policy can only change while the task is a draft")
            values["approval_policy"] = value
            values["approval_state"] = initial_approval_state(value)
        elif name == "scope":
            _check_scope(value)
            values["scope"] = value
        elif name == "priority":
            values["priority"] = value
            await run_store.run_update_priority_for_task(u.conn, task.id, RANK[value])
        elif name == "due_at":
            values["due_at"] = value
            values["overdue_at"] = None
            if value is None:
                await timer_store.timer_delete_for_task(u.conn, task.id, "due")
            else:
                await _set_due_timer(u, task, value)
        else:
            values[name] = value
    if values:
        values["updated_at"] = u.now
        await store.task_update(u.conn, task.id, values)
        await record(u, "task.updated", task_id=task.id, payload={"changed": sorted(changes)})
    if "queue" in changes and task.status == "ready":
        await settle(u, await get(u, task.id))  # a task given a queue is owed a run, as at creation
    return await get(u, task.id)


async def _move_queue(u: Unit, task: Task, name: str | None, values: dict[str, Any]) -> None:
    active = await run_store.run_active_for_task(u.conn, task.id, lock=True)
    if active is not None and active.status != "queued":
        raise Conflict(f"task {task.identifier} is being worked on; its queue cannot change until the run ends")
    if name is None:
        if active is not None:
            await move_run(u, active, "cancel", end_reason="queue_removed")
        values["queue_id"] = None
        return
    queue = await queues.ensure(u, name)
    values["queue_id"] = queue.id
    if active is not None:
        await run_store.run_move_queue_for_task(u.conn, task.id, queue.id)


async def delete(u: Unit, task_id: str) -> None:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    active = await run_store.run_active_for_task(u.conn, task.id)
    if active is not None and active.status != "queued":
        raise Conflict(f"task {task.identifier} has a run in progress; cancel the task first")
    if await store.children_ids(u.conn, u.workspace_id, [task.id]):
        raise Conflict(f"task {task.identifier} has child tasks; delete or move them first")
    await record(u, "task.deleted", task_id=task.id, payload={"identifier": task.identifier, "title": task.title})
    dependents = await store.dependency_dependents(u.conn, task.id)
    await u.flush()  # the task's last event takes its number before the row goes
    await store.task_delete(u.conn, task.id)
    # Its dependents lose that dependency with it; one that waited only on it may go ahead now.
    for dependent_id in dependents:
        dependent = await store.task_get(u.conn, u.workspace_id, dependent_id, lock=True)
        if dependent is not None and dependent.status == "blocked":
            await settle(u, dependent)


async def publish(u: Unit, task_id: str) -> Task:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task.status != "draft":
        raise Conflict(f"task {task.identifier} is {task.status}, not a draft; only drafts can be published")
    await store.task_update(u.conn, task.id, {"draft": False})
    task.draft = False
    task = await settle(u, task)
    return await get(u, task.id)


async def approve(u: Unit, task_id: str, comment: str | None = None) -> Task:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task.approval_policy != "required":
        raise Conflict(f"task {task.identifier} does not require approval")
    if task.approval_state != "pending":
        raise Conflict(f"task {task.identifier} is {task.approval_state}, not pending approval")
    if task_states.is_final(task.status):
        raise Conflict(f"task {task.identifier} is {task.status}")
    await store.task_update(u.conn, task.id, {"approval_state": "approved", "updated_at": u.now})
    await record(u, "task.approved", task_id=task.id, payload={"comment": comment})
    task.approval_state = "approved"
    if task.status != "draft":
        await settle(u, task)
    return await get(u, task.id)


async def reject(u: Unit, task_id: str, reason: str | None = None) -> Task:
    """A rejected task will not be done: it is canceled, and its approval state says why."""
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task.approval_policy != "required" or task.approval_state != "pending":
        raise Conflict(f"task {task.identifier} is not pending approval")
    await store.task_update(u.conn, task.id, {"approval_state": "rejected"})
    task.approval_state = "rejected"
    await record(u, "task.rejected", task_id=task.id, payload={"reason": reason})
    await _cancel_one(u, task, reason or "rejected")
    return await get(u, task.id)


async def cancel(u: Unit, task_id: str, reason: str | None = None) -> Task:
    """Cancel the task and every open task below it; their runs are canceled, so holders lose their leases."""
    u.principal.require("tasks.write")
    root = await get(u, task_id, lock=True)
    if task_states.is_final(root.status):
        raise Conflict(f"task {root.identifier} is {root.status} already")
    level = [root.id]
    subtree: list[str] = []
    while level:
        subtree.extend(level)
        level = await store.children_ids(u.conn, u.workspace_id, level)
    for task_id_in_tree in subtree:
        task = await store.task_get(u.conn, u.workspace_id, task_id_in_tree, lock=True)
        if task is not None and not task_states.is_final(task.status):
            await _cancel_one(u, task, reason)
    return await get(u, root.id)


async def _cancel_one(u: Unit, task: Task, reason: str | None) -> None:
    run = await run_store.run_active_for_task(u.conn, task.id, lock=True)
    if run is not None:
        await move_run(u, run, "cancel", end_reason="task_canceled")
    await timer_store.timer_delete_for_task(u.conn, task.id, "retry")
    await move_task(u, task, "cancel", payload={"reason": reason})


async def start(u: Unit, task_id: str) -> Task:
    """Ask for a run now: for queues that only enqueue on an explicit start."""
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task.queue_id is None:
        raise Conflict(f"task {task.identifier} has no queue to run in; set its queue first")
    if task.status not in ("ready", "blocked", "draft"):
        raise Conflict(f"task {task.identifier} is {task.status}; only a task that has not started can be started")
    if not task.start_requested:
        await store.task_update(u.conn, task.id, {"start_requested": True, "updated_at": u.now})
        task.start_requested = True
        await record(u, "task.start_requested", task_id=task.id)
    if task.status != "draft":
        await settle(u, task)
    return await get(u, task.id)


async def counts(u: Unit, task_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(child count, dependency count) for each of ``task_ids`` (of this workspace): two grouped queries."""
    children_of = await store.task_child_counts(u.conn, u.workspace_id, task_ids)
    dependencies_of = await store.dependency_counts(u.conn, u.workspace_id, task_ids)
    return {task_id: (children_of.get(task_id, 0), dependencies_of.get(task_id, 0)) for task_id in task_ids}


async def get_many(u: Unit, task_ids: list[str]) -> list[Task]:
    """The tasks of this workspace among ``task_ids`` (by id), in that order; unknown ids are left out.
    ``depends_on`` is filled in."""
    found = await store.task_get_many(u.conn, u.workspace_id, list(dict.fromkeys(task_ids)))
    deps = await store.dependency_targets(u.conn, [t.id for t in found])
    for task in found:
        task.depends_on = deps.get(task.id, [])
    return found


async def dependency_records(u: Unit, task_ids: list[str]) -> dict[str, list[tuple[str, datetime]]]:
    """For each task, its dependency edges as (depends-on task id, created at), oldest first."""
    return await store.dependency_records(u.conn, u.workspace_id, task_ids)


async def max_attempts(u: Unit, task_ids: list[str]) -> dict[str, int | None]:
    """Each task's effective attempt limit: its own ``max_attempts``, else its queue's; None with neither."""
    return await store.task_max_attempts(u.conn, u.workspace_id, task_ids)


async def children(u: Unit, task_id: str) -> list[Task]:
    parent = await get(u, task_id)
    ids = await store.children_ids(u.conn, u.workspace_id, [parent.id])
    return await store.task_get_many(u.conn, u.workspace_id, ids)


async def add_dependencies(u: Unit, task_id: str, depends_on: list[str]) -> Task:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    if task_states.is_final(task.status):
        raise Conflict(f"task {task.identifier} is {task.status}; a closed task takes no dependencies")
    for dep_ref in dict.fromkeys(depends_on):
        dep = await _existing(u, dep_ref, "depends_on")
        if dep.id == task.id:
            raise ValidationFailed(
                "a task cannot depend on itself", [FieldError("depends_on", "must not contain the task's own id")]
            )
        path = await _path(u, start=dep.id, goal=task.id)
        if path is not None:
            names = " -> ".join([task.identifier, *path])
            raise Conflict(f"adding this dependency would make a cycle: {names}", cycle=path)
        if await store.dependency_insert(
            u.conn, workspace_id=u.workspace_id, task_id=task.id, depends_on=dep.id, now=u.now
        ):
            await record(
                u,
                "task.dependency_added",
                task_id=task.id,
                payload={"depends_on_task_id": dep.id, "depends_on": dep.identifier},
            )
    if task.status != "draft":
        await settle(u, task)
    return await get(u, task.id)


async def _path(u: Unit, *, start: str, goal: str) -> list[str] | None:
    """Identifiers along a dependency chain from ``start`` to ``goal``, if one exists (breadth first)."""
    parents: dict[str, str | None] = {start: None}
    level = [start]
    while level:
        if goal in level:
            chain: list[str] = []
            node: str | None = goal
            while node is not None:
                chain.append(node)
                node = parents[node]
            tasks = {t.id: t.identifier for t in await store.task_get_many(u.conn, u.workspace_id, chain)}
            return [tasks.get(i, i) for i in reversed(chain)]
        edges = await store.dependency_targets(u.conn, level)
        next_level = []
        for source, targets in edges.items():
            for target in targets:
                if target not in parents:
                    parents[target] = source
                    next_level.append(target)
        level = next_level
    return None


async def remove_dependency(u: Unit, task_id: str, depends_on: str) -> Task:
    u.principal.require("tasks.write")
    task = await get(u, task_id, lock=True)
    dep = await store.task_get(u.conn, u.workspace_id, depends_on)
    if dep is None or not await store.dependency_delete(u.conn, task.id, dep.id):
        raise NotFound(f"task {task.identifier} does not depend on {depends_on}")
    await record(u, "task.dependency_removed", task_id=task.id, payload={"depends_on_task_id": dep.id})
    if task.status == "blocked":
        await settle(u, task)
    return await get(u, task.id)


async def tree(u: Unit, task_id: str, max_depth: int = 20) -> TreeNode:
    root = await get(u, task_id)
    nodes = {root.id: TreeNode(root, [])}
    level = [root.id]
    for _ in range(max_depth):
        child_ids = await store.children_ids(u.conn, u.workspace_id, level)
        if not child_ids:
            break
        for child in await store.task_get_many(u.conn, u.workspace_id, child_ids):
            node = TreeNode(child, [])
            nodes[child.id] = node
            if child.parent_task_id in nodes:
                nodes[child.parent_task_id].children.append(node)
        level = child_ids
    return nodes[root.id]
