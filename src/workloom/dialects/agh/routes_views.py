"""Live views of one task: its timeline (a page or an SSE stream) and its tree of descendants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from workloom.api import sse
from workloom.dialects.agh import shapes
from workloom.dialects.agh.deps import engine, json, principal
from workloom.dialects.agh.query import bounded
from workloom.dialects.agh.reads import gather
from workloom.domain.errors import FieldError, ValidationFailed
from workloom.domain.models import Run, Task
from workloom.engine import runs, tasks
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.tasks import TreeNode
from workloom.engine.unit import Unit

router = APIRouter(prefix="/api/tasks/{task_id}", tags=["views"])

TIMELINE_LIMIT, TIMELINE_MAX = 1000, 5000
# AGH puts the kind of a stream message in its data (``type``); the SSE event name stays the default,
# so a browser's ``EventSource.onmessage`` receives every message.
SSE_EVENT = "message"

Snapshot = tuple[Task, dict[str, Run], shapes.Facts]


async def snapshot(u: Unit, task_id: str) -> Snapshot:
    """The task as it is now, its runs by id and its facts: what each timeline item shows beside its event."""
    task = await tasks.get(u, task_id)
    found = {r.id: r for r in await runs.list_for_task(u, task.id)}
    return task, found, await gather(u, [task], edges=False)


@router.get("/timeline")
async def timeline(
    task_id: str,
    after_sequence: int = Query(0, ge=0),
    limit: int | None = Query(None, ge=1),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    task, found, facts = await wl.run(p, lambda u: snapshot(u, task_id))
    events = await wl.events.timeline(p, task.id, after_sequence, bounded(limit, TIMELINE_LIMIT, TIMELINE_MAX))
    return json({"timeline": [shapes.timeline_item(e, task, found, facts) for e in events]})


def _resume_point(request: Request, given: int) -> int:
    header = request.headers.get("last-event-id")
    if header is None:
        return given
    if not header.isdigit():
        raise ValidationFailed(
            "Last-Event-ID is not valid", [FieldError("Last-Event-ID", "must be the id of an event this stream sent")]
        )
    return int(header)


@router.get("/stream")
async def stream(
    request: Request,
    task_id: str,
    after_sequence: int = Query(0, ge=0),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> StreamingResponse:
    """Every timeline event after ``after_sequence`` (or ``Last-Event-ID``), then new ones as they happen;
    each message's id is its task sequence, so a reconnecting client resumes where it stopped."""
    task = await wl.run(p, lambda u: tasks.get(u, task_id))
    after = _resume_point(request, after_sequence)
    stopping = request.app.state.stopping

    async def source() -> AsyncIterator[bytes]:
        async for event in wl.events.follow_task(p, task.id, after, stop=stopping):
            current, found, facts = await wl.run(p, lambda u: snapshot(u, task.id))
            body = shapes.stream_message(event, current, found, facts)
            yield sse.message(event.task_sequence or 0, SSE_EVENT, body)

    return sse.stream(request, source(), request.app.state.settings.keepalive_seconds, start_id=after)


@router.get("/tree")
async def tree(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    async def read(u: Unit) -> dict[str, Any]:
        root = await tasks.tree(u, task_id)
        nodes = list(_walk(root, 0))
        facts = await gather(u, [node.task for node, _ in nodes], edges=False)
        rendered = [shapes.tree_node(node.task, depth, facts) for node, depth in nodes]
        return {"descendants": rendered[1:], "root": rendered[0]}

    return json({"tree": await wl.run(p, read)})


def _walk(node: TreeNode, depth: int) -> list[tuple[TreeNode, int]]:
    """The node and its descendants, depth first, each with its depth below the root."""
    out = [(node, depth)]
    for child in node.children:
        out.extend(_walk(child, depth + 1))
    return out
