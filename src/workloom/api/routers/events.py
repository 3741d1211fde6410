"""Event streams (SSE): a task's timeline as it grows, and the whole workspace's log."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from workloom.api import render, sse
from workloom.api.deps import engine, principal
from workloom.api.lean import LeanRoute
from workloom.domain.errors import FieldError, ValidationFailed
from workloom.domain.models import Event
from workloom.engine import tasks
from workloom.engine.events import Feed
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom

router = APIRouter(tags=["events"], route_class=LeanRoute)

RECENT_MESSAGES = 4096


class EncodedEvents:
    """Every stream of a workspace sends the same bytes for an event: render and encode it once, for the
    first stream that sends it (with a thousand subscribers, encoding was most of the fan-out's work)."""

    def __init__(self, size: int = RECENT_MESSAGES) -> None:
        self._size = size
        self._messages: OrderedDict[int, bytes] = OrderedDict()

    def message(self, event: Event) -> bytes:
        found = self._messages.get(event.sequence)
        if found is None:
            found = self._messages[event.sequence] = sse.message(event.sequence, event.type, render.event(event))
            if len(self._messages) > self._size:
                self._messages.popitem(last=False)
        return found


def _resume_point(request: Request, given: int | None, name: str) -> int | None:
    header = request.headers.get("last-event-id")
    if header is not None:
        if not header.isdigit():
            raise ValidationFailed(
                "Last-Event-ID is not valid",
                [FieldError("Last-Event-ID", "must be the id of an event this stream sent")],
            )
        return int(header)
    return given


@router.get("/v1/tasks/{task_id}/stream")
async def task_stream(
    request: Request,
    task_id: str,
    after_sequence: int | None = Query(None, ge=0),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> StreamingResponse:
    task = await wl.run(p, lambda u: tasks.get(u, task_id))
    after = _resume_point(request, after_sequence, "after_sequence") or 0

    async def source() -> AsyncIterator[bytes]:
        async for event in wl.events.follow_task(p, task.id, after, stop=request.app.state.stopping):
            yield sse.message(event.task_sequence or 0, event.type, render.event(event))

    return sse.stream(request, source(), request.app.state.settings.keepalive_seconds, start_id=after)


@router.get("/v1/events/stream")
async def events_stream(
    request: Request,
    after: int | None = Query(None, ge=0),
    types: str | None = Query(None, max_length=2000),
    task_id: str | None = Query(None, max_length=60),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> StreamingResponse:
    start = _resume_point(request, after, "after")
    if start is None:
        start = await wl.events.last_sequence(p)
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    resolved_task = (await wl.run(p, lambda u: tasks.get(u, task_id))).id if task_id else None

    feed = wl.events.subscribe(p, start, types=wanted, task_id=resolved_task, stop=request.app.state.stopping)
    chunks = _EncodedFeed(feed, request.app.state.encoded_events)
    return sse.stream(request, chunks, request.app.state.settings.keepalive_seconds, start_id=start)


class _EncodedFeed:
    """A workspace feed as SSE messages (``sse.Chunks``), each event encoded once for every stream."""

    def __init__(self, feed: Feed, encoded: EncodedEvents) -> None:
        self._feed = feed
        self._encoded = encoded

    async def next(self, timeout: float) -> list[bytes] | None:
        events = await self._feed.next(timeout)
        return None if events is None else [self._encoded.message(event) for event in events]

    async def aclose(self) -> None:
        self._feed.close()
