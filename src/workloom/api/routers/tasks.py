"""/v1/tasks: the task resource, its transitions, children, dependencies, tree, runs and timeline."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import engine, idempotency, json, principal
from workloom.api.lean import LeanRoute
from workloom.api.listing import task_query
from workloom.api.schemas.tasks import Comment, DependenciesAdd, ReasonBody, TaskBatch, TaskCreate, TaskPatch
from workloom.domain.models import Task
from workloom.engine import runs, tasks
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey, Unit

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], route_class=LeanRoute)


def _ok(task: Task) -> tuple[int, dict[str, object]]:
    return 200, render.task(task)


def _created(task: Task) -> tuple[int, dict[str, object]]:
    return 201, render.task(task)


@router.post("", status_code=201)
async def create_task(
    body: TaskCreate,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: tasks.create(u, body.to_new()), _created, idem, shared=True)
    return json(data, status)


@router.post("/batch", status_code=201)
async def create_tasks(
    body: TaskBatch,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    """Up to 1000 tasks in one transaction: all are created, or none."""

    def rendered(created: list[Task]) -> tuple[int, dict[str, object]]:
        return 201, {"items": [render.task(t) for t in created]}

    status, data = await wl.respond(p, lambda u: tasks.create_many(u, [t.to_new() for t in body.tasks]), rendered, idem)
    return json(data, status)


@router.get("")
async def list_tasks(request: Request, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    query = task_query(request.query_params)
    page = await wl.run(p, lambda u: tasks.list_tasks(u, query))
    extra = {"total": page.total} if query.count else {}
    return json(render.items([render.task(t) for t in page.items], page.next_cursor, **extra))


@router.get("/{task_id}")
async def get_task(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json(render.task(await wl.run(p, lambda u: tasks.get(u, task_id))))


@router.patch("/{task_id}")
async def patch_task(
    task_id: str, body: TaskPatch, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.task(await wl.run(p, lambda u: tasks.patch(u, task_id, body.changes()))))


@router.delete("/{task_id}", status_code=204)
async def delete_task(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    await wl.run(p, lambda u: tasks.delete(u, task_id))
    return Response(status_code=204)


@router.post("/{task_id}/publish")
async def publish(
    task_id: str,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: tasks.publish(u, task_id), _ok, idem)
    return json(data, status)


@router.post("/{task_id}/approve")
async def approve(
    task_id: str,
    body: Comment | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    comment = body.comment if body else None
    status, data = await wl.respond(p, lambda u: tasks.approve(u, task_id, comment), _ok, idem)
    return json(data, status)


@router.post("/{task_id}/reject")
async def reject(
    task_id: str,
    body: ReasonBody | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None
    status, data = await wl.respond(p, lambda u: tasks.reject(u, task_id, reason), _ok, idem)
    return json(data, status)


@router.post("/{task_id}/cancel")
async def cancel(
    task_id: str,
    body: ReasonBody | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None
    status, data = await wl.respond(p, lambda u: tasks.cancel(u, task_id, reason), _ok, idem)
    return json(data, status)


@router.post("/{task_id}/start")
async def start(
    task_id: str,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: tasks.start(u, task_id), _ok, idem)
    return json(data, status)


@router.get("/{task_id}/children")
async def list_children(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    found = await wl.run(p, lambda u: tasks.children(u, task_id))
    return json(render.items([render.task(t) for t in found]))


@router.post("/{task_id}/children", status_code=201)
async def create_child(
    task_id: str,
    body: TaskCreate,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    async def create(u: Unit) -> Task:
        parent = await tasks.get(u, task_id)
        return await tasks.create(u, body.to_new(parent_task_id=parent.id))

    status, data = await wl.respond(p, create, _created, idem)
    return json(data, status)


@router.post("/{task_id}/dependencies")
async def add_dependencies(
    task_id: str, body: DependenciesAdd, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.task(await wl.run(p, lambda u: tasks.add_dependencies(u, task_id, body.depends_on))))


@router.delete("/{task_id}/dependencies/{depends_on_id}")
async def remove_dependency(
    task_id: str, depends_on_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.task(await wl.run(p, lambda u: tasks.remove_dependency(u, task_id, depends_on_id))))


@router.get("/{task_id}/tree")
async def tree(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json(render.tree(await wl.run(p, lambda u: tasks.tree(u, task_id))))


@router.get("/{task_id}/runs")
async def task_runs(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    found = await wl.run(p, lambda u: runs.list_for_task(u, task_id))
    return json(render.items([render.run(r) for r in found]))


@router.post("/{task_id}/runs", status_code=201)
async def enqueue_run(
    task_id: str,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: runs.enqueue(u, task_id), lambda r: (201, render.run(r)), idem)
    return json(data, status)


@router.get("/{task_id}/usage")
async def usage(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json({"usage": await wl.run(p, lambda u: runs.usage_summary(u, task_id))})


@router.get("/{task_id}/timeline")
async def timeline(
    task_id: str,
    after_sequence: int = Query(0, ge=0),
    limit: int = Query(1000, ge=1, le=5000),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    found = await wl.events.timeline(p, task_id, after_sequence, limit)
    return json(render.items([render.event(e) for e in found]))
