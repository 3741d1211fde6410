"""Server-sent events: one event per message, comment lines as keep-alives, ended on shutdown or disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

_DONE = object()


class Chunks(Protocol):
    """What a stream sends, taken as it comes: ``next`` waits up to ``timeout`` and returns the messages
    that arrived (``[]`` if none did: time for a keep-alive), or None once there will be no more."""

    async def next(self, timeout: float) -> list[bytes] | None: ...

    async def aclose(self) -> None: ...


def message(event_id: int | str, event_type: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(event_id).encode(), event_type.encode(), orjson.dumps(data))


def stream(
    request: Request,
    source: AsyncIterator[bytes] | Chunks,
    keepalive_seconds: float,
    start_id: int | None = None,
) -> StreamingResponse:
    """``start_id`` is sent first, so a client that loses the connection before any event can still resume."""
    opening = b": connected\n" + (b"id: %d\n" % start_id if start_id is not None else b"") + b"\n"
    chunks = _Relayed(request, source) if isinstance(source, AsyncIterator) else source
    return StreamingResponse(
        _body(request, chunks, keepalive_seconds, opening),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _body(request: Request, chunks: Chunks, keepalive: float, opening: bytes) -> AsyncIterator[bytes]:
    stopping: asyncio.Event = request.app.state.stopping
    try:
        yield opening
        while not stopping.is_set():
            sent = await chunks.next(keepalive)
            if sent is None:
                return
            if sent:
                # What arrived together goes in one write: one socket write per burst, not per event.
                yield b"".join(sent)
                continue
            if await request.is_disconnected():
                return
            yield b": keep-alive\n\n"
    finally:
        await chunks.aclose()


class _Relayed:
    """An iterator of messages as ``Chunks``: relayed through a queue by a task of its own, so a quiet
    iterator still lets keep-alives out on time, and shutdown ends the stream at once."""

    def __init__(self, request: Request, source: AsyncIterator[bytes]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1000)
        self._source = source
        self._producer: asyncio.Task[None] | None = None
        self._stop_waiter: asyncio.Task[bool] | None = None
        self._stopping: asyncio.Event = request.app.state.stopping
        self._done = False

    async def _pump(self) -> None:
        try:
            async for chunk in self._source:
                await self._queue.put(chunk)
        finally:
            await self._queue.put(_DONE)

    async def next(self, timeout: float) -> list[bytes] | None:
        if self._done:
            return None
        if self._producer is None:
            self._producer = asyncio.create_task(self._pump())
            self._stop_waiter = asyncio.create_task(self._stopping.wait())
        getter = asyncio.create_task(self._queue.get())
        assert self._stop_waiter is not None
        done, _ = await asyncio.wait({getter, self._stop_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return None if self._stop_waiter in done else []
        item = getter.result()
        chunks: list[bytes] = []
        while item is not _DONE:
            assert isinstance(item, bytes)
            chunks.append(item)
            if self._queue.empty():
                return chunks
            item = self._queue.get_nowait()
        self._done = True
        return chunks or None

    async def aclose(self) -> None:
        for task in (self._producer, self._stop_waiter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
