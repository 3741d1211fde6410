"""Task numbers on PostgreSQL, reserved in a short transaction of their own.

Reserving inside the creating transaction locks the workspace row until that transaction commits, so
every create in a workspace would wait for the previous one's commit to reach the disk: creates one at
a time, at the disk's flush rate. Here the counter moves in its own one-statement transaction, on
connections of its own, committed with ``synchronous_commit = off`` (the row is locked for
microseconds, not for a flush). That is safe: a task that uses a number commits durably *after* the
reservation committed, and a durable commit flushes the log up to its own record, so the reservation
is on disk before any task that holds its number. A crash or a rolled-back create leaves a gap in the
numbers, never a duplicate.

Under load, a process also reserves a few numbers ahead (``NumberStock``): a group of creates then takes
its numbers from those, and its one statement is its only round trip. The reservation was the other one,
and the one the loaded event loop was slowest to answer (~2 ms of a group's ~7 here; with no reservation
at all, creates one at a time from 16 clients ran 35 % faster). The numbers ahead are few — what the
process's creates took in the last ``WINDOW_SECONDS`` — and are taken in order, so a process's creates one
at a time are numbered in the order they are written (a batch, or another process, may take higher
numbers meanwhile). Numbers not taken within ``HOLD_SECONDS`` are left unused (a gap), so that no task
gets a number reserved long before it was made. Below ``AHEAD_FROM`` numbers in a window (a few hundred
creates a second) nothing is reserved ahead. One call's tasks (a batch) are reserved as they come: their
numbers are one run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from workloom.store.database import plain_url

RESERVE = "UPDATE workspaces SET task_counter = task_counter + $2 WHERE id = $1 RETURNING task_counter"
# What a statement on a connection that died under it raises: closed mid-statement, already closed, or
# ended by the server (57P01 and the like) as the statement ran.
_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# Numbers reserved ahead: as many as were taken in the last WINDOW_SECONDS, where that is AHEAD_FROM or more,
# topped up when fewer than half of that are left; left unused (a gap) if not taken within HOLD_SECONDS.
WINDOW_SECONDS = 0.02
AHEAD_FROM = 4
HOLD_SECONDS = 1.0
log = logging.getLogger("workloom.store")


@dataclass(slots=True)
class _Range:
    first: int
    left: int
    at: float  # when it was reserved


class NumberStock:
    """The numbers one process takes from a workspace's counter: reserved exactly when asked for, or, under
    load, from a few reserved ahead. ``fetch(workspace_id, count)`` reserves ``count`` numbers and returns
    the last; ``now`` is a monotonic clock in seconds. One reservation of a workspace is on its way at a
    time; whoever needs numbers meanwhile waits for it, and it brings numbers for them too, so a process's
    numbers come ascending and are taken in order."""

    def __init__(self, fetch: Callable[[str, int], Awaitable[int]], now: Callable[[], float]) -> None:
        self._fetch = fetch
        self._now = now
        self._stock: dict[str, deque[_Range]] = {}
        self._recent: dict[str, deque[tuple[float, int]]] = {}  # small reservations: when, how many
        self._short: dict[str, int] = {}  # numbers the reservation under way must bring for those waiting
        self._filling: dict[str, asyncio.Task[None]] = {}

    async def take(self, workspace_id: str, count: int, *, whole: bool = True) -> Sequence[int]:
        """``count`` numbers of the workspace, ascending. ``whole``: one run (a batch's), reserved as it is
        asked for; the numbers ahead may come from several reservations, between which another process
        reserved."""
        if whole and count > 1:
            last = await self._fetch(workspace_id, count)
            return range(last - count + 1, last + 1)
        ahead = self._demand(workspace_id, count)
        while True:
            taken = self._from_stock(workspace_id, count)
            if taken is not None:
                if self._in_stock(workspace_id) * 2 < ahead:
                    self._fill(workspace_id, ahead)
                return taken
            self._short[workspace_id] = self._short.get(workspace_id, 0) + count
            await asyncio.shield(self._fill(workspace_id, ahead))

    def close(self) -> None:
        for filling in list(self._filling.values()):
            filling.cancel()
        self._stock.clear()

    def _demand(self, workspace_id: str, count: int) -> int:
        """How many numbers to keep ahead: those taken in the last window, this one included (none below
        ``AHEAD_FROM``)."""
        now = self._now()
        recent = self._recent.setdefault(workspace_id, deque())
        recent.append((now, count))
        while recent[0][0] < now - WINDOW_SECONDS:
            recent.popleft()
        taken = sum(n for _, n in recent)
        return taken if taken >= AHEAD_FROM else 0

    def _fill(self, workspace_id: str, ahead: int) -> asyncio.Task[None]:
        """The reservation under way, or a new one of what those waiting lack plus ``ahead``."""
        filling = self._filling.get(workspace_id)
        if filling is None:
            filling = asyncio.get_running_loop().create_task(self._filled(workspace_id, ahead))
            filling.add_done_callback(_retrieved)
            self._filling[workspace_id] = filling
        return filling

    async def _filled(self, workspace_id: str, ahead: int) -> None:
        try:
            count = self._short.pop(workspace_id, 0) + ahead
            last = await self._fetch(workspace_id, count)
            self._stock.setdefault(workspace_id, deque()).append(_Range(last - count + 1, count, self._now()))
        finally:
            self._filling.pop(workspace_id, None)
            self._short.pop(workspace_id, None)  # its waiters look at the stock again, and ask again if short

    def _in_stock(self, workspace_id: str) -> int:
        stock = self._stock.get(workspace_id)
        if not stock:
            return 0
        too_old = self._now() - HOLD_SECONDS
        while stock and stock[0].at < too_old:
            stock.popleft()
        return sum(r.left for r in stock)

    def _from_stock(self, workspace_id: str, count: int) -> list[int] | None:
        if self._in_stock(workspace_id) < count:
            return None
        stock = self._stock[workspace_id]
        taken: list[int] = []
        while len(taken) < count:
            head = stock[0]
            used = min(head.left, count - len(taken))
            taken.extend(range(head.first, head.first + used))
            head.first += used
            head.left -= used
            if not head.left:
                stock.popleft()
        return taken


def _retrieved(filling: asyncio.Task[None]) -> None:
    """A reservation that failed is logged here: those waiting for it have its error raised to them, and a
    top-up nobody waited for is asked again by the next create short of numbers, which then meets it."""
    if not filling.cancelled() and (error := filling.exception()) is not None:
        log.info("task numbers could not be reserved ahead", extra={"error": type(error).__name__})


class TaskNumbers:
    def __init__(self, url: str, *, connections: int = 2) -> None:
        self._url = plain_url(url)
        self._connections = connections
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._stock = NumberStock(self._reserve, time.monotonic)

    async def reserve(self, workspace_id: str, count: int, *, whole: bool = True) -> Sequence[int]:
        """``count`` numbers of the workspace, ascending (``NumberStock``); ``whole``: one run."""
        return await self._stock.take(workspace_id, count, whole=whole)

    async def _reserve(self, workspace_id: str, count: int) -> int:
        """Reserve ``count`` numbers of the workspace; returns the last one reserved."""
        pool = self._pool or await self._open()
        try:
            last = await pool.fetchval(RESERVE, workspace_id, count)
        except _LOST:
            # Its connection died unseen (PostgreSQL restarted, or ended the session): the pool has let it
            # go, and a new one is taken. Had the first reservation committed, its numbers are a gap.
            last = await pool.fetchval(RESERVE, workspace_id, count)
        if last is None:
            raise LookupError(f"workspace {workspace_id} not found")
        return int(last)

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=self._connections,
                    # lock_timeout: never wait long on the row; the creating transaction is waiting on us.
                    server_settings={"synchronous_commit": "off", "lock_timeout": "10s"},
                    # One statement, no session state to undo: skip the reset round trip on every release.
                    reset=_keep_session,
                )
            return self._pool

    async def close(self) -> None:
        self._stock.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None
