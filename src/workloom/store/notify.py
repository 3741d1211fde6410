"""Cross-process wake-ups on PostgreSQL: NOTIFY after the writing transaction commits, LISTEN on one connection.

The NOTIFY is not sent inside the writing transaction: PostgreSQL serialises the commits of all
transactions that notified on one lock held across their log flush, so every write would wait for the
previous one's flush (measured here: ~150 writing requests/s in all, whatever the concurrency). The
keys of committed transactions go instead to a ``Notifier``, which sends them, coalesced, from a
connection of its own committed without waiting for the disk. A wake-up only says "look again": one
lost to a crash between commit and send delays a waiter until its next poll, it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from workloom.store.database import plain_url

CHANNEL = "workloom"
log = logging.getLogger("workloom.store.notify")


MAX_PAYLOAD = 7000  # PostgreSQL refuses payloads of 8000 bytes or more


def payloads(keys: set[str]) -> list[str]:
    """The keys as space-separated payloads, each under PostgreSQL's size limit."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for key in sorted(keys):
        length = len(key.encode())  # the limit is in bytes
        if current and size + length + 1 > MAX_PAYLOAD:
            out.append(" ".join(current))
            current, size = [], 0
        current.append(key)
        size += length + 1
    if current:
        out.append(" ".join(current))
    return out


class Notifier:
    """Sends the wake-up keys of committed transactions to every process, coalescing what piles up."""

    def __init__(self, url: str) -> None:
        self._url = plain_url(url)
        self._pending: set[str] = set()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def send(self, keys: set[str]) -> None:
        if not keys:
            return
        self._pending |= keys
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="workloom-notifier")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                keys, self._pending = self._pending, set()
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._url, server_settings={"synchronous_commit": "off"})
                    for payload in payloads(keys):
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # Waiters elsewhere fall back on their poll; the next commit tries a new connection.
                    log.warning("wake-ups not sent to other processes", extra={"error": type(exc).__name__})
                    if conn is not None:
                        conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                conn.terminate()


class Listener:
    """Holds one LISTEN connection and hands each notification's keys to ``on_keys``; reconnects if dropped."""

    def __init__(self, url: str, on_keys: Callable[[list[str]], None]) -> None:
        self._url = plain_url(url)
        self._on_keys = on_keys
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="workloom-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("listener cannot connect, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._deliver)
                self.connected.set()
                # Everything may have changed while disconnected: wake every waiter once.
                self._on_keys(["*"])
                await lost.wait()
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close()

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_keys(payload.split())


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()
