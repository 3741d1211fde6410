"""/api/tasks: listing, creating, reading, changing and deleting tasks, and their transitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from workloom.api.deps import idempotency
from workloom.dialects.agh import bodies, reads, shapes
from workloom.dialects.agh.deps import check_workspace, empty, engine, json, principal
from workloom.dialects.agh.query import TaskFilters
from workloom.dialects.agh.vocab import (
    DEFAULT_CHANNEL,
    DEFAULT_SCOPE,
    AghApprovalState,
    AghOwnerKind,
    AghPriority,
    AghScope,
    AghTaskStatus,
)
from workloom.domain.actors import Actor
from workloom.domain.models import Run, Task
from workloom.engine import runs, tasks
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey, Unit

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

# AGH name of a patchable field → the engine's; fields absent here keep their name.
PATCH_NAMES = {"network_channel": "queue"}
# Patch fields whose null means "leave unchanged" rather than "clear".
NOT_CLEARABLE = frozenset({"title", "priority", "approval_policy", "scope", "network_channel"})


def new_task(body: bodies.TaskCreate, parent_task_id: str | None = None) -> NewTask:
    return NewTask(
        title=body.title.strip(),
        description=body.description,
        queue=body.network_channel or DEFAULT_CHANNEL,
        priority=body.priority,
        max_attempts=body.max_attempts,
        draft=body.draft,
        parent_task_id=parent_task_id or body.parent_task_id,
        depends_on=list(body.depends_on),
        approval_policy=body.approval_policy,
        owner=Actor(body.owner.kind, body.owner.ref) if body.owner else None,
        metadata=body.metadata,
        scope=body.scope or DEFAULT_SCOPE,
    )


def changes(body: bodies.TaskPatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in NOT_CLEARABLE:
            continue
        out[PATCH_NAMES.get(name, name)] = Actor(value.kind, value.ref) if isinstance(value, bodies.Owner) else value
    return out


def task_answer(status: int = 200) -> Callable[[tuple[Task, shapes.Facts]], tuple[int, dict[str, Any]]]:
    def render(found: tuple[Task, shapes.Facts]) -> tuple[int, dict[str, Any]]:
        return status, {"task": shapes.task_record(*found)}

    return render


def run_and_task(found: tuple[Task, Run | None, shapes.Facts]) -> tuple[int, dict[str, Any]]:
    task, run, facts = found
    return 200, {"run": shapes.run_full(run) if run else None, "task": shapes.task_record(task, facts)}


async def recorded(u: Unit, task: Task) -> tuple[Task, shapes.Facts]:
    await u.flush()  # a task just created has its rows held for the unit's end; its facts are read now
    return task, await reads.gather(u, [task], edges=False)


@router.get("")
async def list_tasks(
    scope: AghScope | None = None,
    workspace: str | None = Query(None, max_length=200),
    status: AghTaskStatus | None = None,
    priority: AghPriority | None = None,
    include_drafts: bool = False,
    approval_state: AghApprovalState | None = None,
    owner_kind: AghOwnerKind | None = None,
    owner_ref: str | None = Query(None, max_length=200),
    parent_task_id: str | None = Query(None, max_length=60),
    network_channel: str | None = Query(None, max_length=200),
    query: str | None = Query(None, max_length=200),
    limit: int | None = Query(None, ge=1),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    filters = TaskFilters(
        scope=scope,
        status=status,
        priority=priority,
        include_drafts=include_drafts,
        approval_state=approval_state,
        owner_kind=owner_kind,
        owner_ref=owner_ref,
        parent_task_id=parent_task_id,
        network_channel=network_channel,
        query=query,
        limit=limit,
    )

    async def listing(u: Unit) -> list[dict[str, Any]]:
        page = await tasks.list_tasks(u, filters.list_query())
        facts = await reads.gather(u, page.items)
        return [shapes.task_summary(t, facts) for t in page.items]

    await check_workspace(wl, p, workspace)
    return json({"tasks": await wl.run(p, listing)})


@router.post("")
async def create_task(
    body: bodies.TaskCreate,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    async def create(u: Unit) -> tuple[Task, shapes.Facts]:
        return await recorded(u, await tasks.create(u, new_task(body)))

    status, data = await wl.respond(p, create, task_answer(201), idem)
    return json(data, status)


@router.get("/{task_id}")
async def get_task(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json({"task": await detail(wl, p, task_id)})


async def detail(wl: Workloom, p: Principal, task_id: str) -> dict[str, Any]:
    async def read(u: Unit) -> tuple[Task, shapes.Facts, list[Task], list[Run]]:
        task = await tasks.get(u, task_id)
        children = await tasks.children(u, task.id)
        facts = await reads.gather(u, [task, *children])
        return task, facts, children, await runs.list_for_task(u, task.id)

    task, facts, children, found_runs = await wl.run(p, read)
    events = await wl.events.timeline(p, task.id, 0, DETAIL_EVENTS)
    return shapes.task_detail(task, facts, children, found_runs, events)


# The task detail shows its first events; the timeline endpoint pages through all of them.
DETAIL_EVENTS = 1000


@router.patch("/{task_id}")
async def patch_task(
    task_id: str, body: bodies.TaskPatch, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    async def patch(u: Unit) -> tuple[Task, shapes.Facts]:
        return await recorded(u, await tasks.patch(u, task_id, changes(body)))

    _, data = task_answer()(await wl.run(p, patch))
    return json(data)


@router.delete("/{task_id}")
async def delete_task(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    await wl.run(p, lambda u: tasks.delete(u, task_id))
    return empty()


@router.post("/{task_id}/publish")
async def publish(
    task_id: str,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    async def op(u: Unit) -> tuple[Task, Run | None, shapes.Facts]:
        return await reads.with_run(u, await tasks.publish(u, task_id))

    status, data = await wl.respond(p, op, run_and_task, idem)
    return json(data, status)


@router.post("/{task_id}/approve")
async def approve(
    task_id: str,
    body: bodies.Approve | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    comment = body.comment if body else None

    async def op(u: Unit) -> tuple[Task, Run | None, shapes.Facts]:
        return await reads.with_run(u, await tasks.approve(u, task_id, comment))

    status, data = await wl.respond(p, op, run_and_task, idem)
    return json(data, status)


@router.post("/{task_id}/start")
async def start(
    task_id: str,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    async def op(u: Unit) -> tuple[Task, Run | None, shapes.Facts]:
        return await reads.with_run(u, await tasks.start(u, task_id))

    status, data = await wl.respond(p, op, run_and_task, idem)
    return json(data, status)


@router.post("/{task_id}/reject")
async def reject(
    task_id: str,
    body: bodies.Reasoned | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None

    async def op(u: Unit) -> tuple[Task, shapes.Facts]:
        return await recorded(u, await tasks.reject(u, task_id, reason))

    status, data = await wl.respond(p, op, task_answer(), idem)
    return json(data, status)


@router.post("/{task_id}/cancel")
async def cancel(
    task_id: str,
    body: bodies.Reasoned | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None

    async def op(u: Unit) -> tuple[Task, shapes.Facts]:
        return await recorded(u, await tasks.cancel(u, task_id, reason))

    status, data = await wl.respond(p, op, task_answer(), idem)
    return json(data, status)


@router.post("/{task_id}/children")
async def create_child(
    task_id: str,
    body: bodies.TaskCreate,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    async def create(u: Unit) -> tuple[Task, shapes.Facts]:
        parent = await tasks.get(u, task_id)
        return await recorded(u, await tasks.create(u, new_task(body, parent_task_id=parent.id)))

    status, data = await wl.respond(p, create, task_answer(201), idem)
    return json(data, status)


@router.post("/{task_id}/dependencies")
async def add_dependency(
    task_id: str, body: bodies.DependencyAdd, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    await wl.run(p, lambda u: tasks.add_dependencies(u, task_id, [body.depends_on_task_id]))
    return json({"task": await detail(wl, p, task_id)})


@router.delete("/{task_id}/dependencies/{depends_on_id}")
async def remove_dependency(
    task_id: str, depends_on_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    await wl.run(p, lambda u: tasks.remove_dependency(u, task_id, depends_on_id))
    return json({"task": await detail(wl, p, task_id)})
