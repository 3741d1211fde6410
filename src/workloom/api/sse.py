"""Server-sent events: one event per message, comment lines as keep-alives, ended on shutdown or disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

_DONE = object()


def message(event_id: int | str, event_type: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(event_id).encode(), event_type.encode(), orjson.dumps(data))


def stream(
    request: Request, source: AsyncIterator[bytes], keepalive_seconds: float, start_id: int | None = None
) -> StreamingResponse:
    """``start_id`` is sent first, so a client that loses the connection before any event can still resume."""
    opening = b": connected\n" + (b"id: %d\n" % start_id if start_id is not None else b"") + b"\n"
    return StreamingResponse(
        _with_keepalive(request, source, keepalive_seconds, opening),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _with_keepalive(
    request: Request, source: AsyncIterator[bytes], keepalive: float, opening: bytes
) -> AsyncIterator[bytes]:
    """Relay ``source`` through a queue so a quiet stream can still send keep-alives on time."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1000)
    stopping: asyncio.Event = request.app.state.stopping

    async def pump() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        finally:
            await queue.put(_DONE)

    producer = asyncio.create_task(pump())
    stop_waiter = asyncio.create_task(stopping.wait())
    try:
        yield opening
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, stop_waiter}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED)
            if stop_waiter in done:
                getter.cancel()
                return
            if getter not in done:
                getter.cancel()
                if await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
                continue
            item = getter.result()
            # Send what else is waiting in the same write: one socket write per burst, not per event.
            chunks = []
            while item is not _DONE:
                assert isinstance(item, bytes)
                chunks.append(item)
                if queue.empty():
                    break
                item = queue.get_nowait()
            if chunks:
                yield b"".join(chunks)
            if item is _DONE:
                return
    finally:
        for task in (producer, stop_waiter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
