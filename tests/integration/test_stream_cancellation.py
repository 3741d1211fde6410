"""A stream stopped while it reads (its client went away) gives its database connection back whole."""

from __future__ import annotations

import asyncio
import contextlib
import random

from harness import Harness

STOPS = 300


async def test_task_streams_stopped_at_any_moment_leave_the_database_writable(h: Harness) -> None:
    """The server stops a stream by cancelling it, wherever it is; one cancelled inside a SQLite query left
    the connection dropped but open, holding the write lock: every writer then waited out the 10 s busy
    timeout and failed. The moment of the cancel is spread over the stream's first reads (a few per cent
    of them land inside the query), so a stream that is not protected fails this within its stops."""
    task = await h.create("watched", queue="q")
    for stop in range(STOPS):
        stream = h.wl.events.follow_task(h.principal, task.id, 0)
        consumer = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(random.random() * 0.003)  # a random moment, not a wait for state
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()
        async with asyncio.timeout(5):
            await h.create(f"written after stop {stop}", queue="q")
