"""Cross-process wake-ups on PostgreSQL: NOTIFY after the writing transaction commits, LISTEN on one connection.

A process that hears nobody else sends nothing: every listener connection says who it is (its
``application_name``), the notifier looks every few seconds whether one other than its own process's is
connected, and a listener that connects says so at once on the channel (``HELLO``), which makes every
notifier that hears it send again. A server on its own (the common case) so spends no NOTIFY per commit,
and a second one starting misses none of the wake-ups it could have waited for: it looks at everything
once it has connected. What a look finds is trusted for those few seconds either way: the look reads
``pg_stat_activity``, and made before every NOTIFY it doubled the notifier's statements.

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
import time
from collections.abc import Callable

import asyncpg

from workloom.store.database import plain_url

CHANNEL = "workloom"
LISTENER_NAME = "workloom-listener"
HELLO = "listener:hello"  # a key no waiter watches: a listener announcing itself
# How long a notifier trusts that no other process listens before it looks again.
ALONE_SECONDS = 5.0
_OTHER_LISTENERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND pid <> $2"
)
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

    def __init__(self, url: str, *, own_listener: Callable[[], int | None] = lambda: None) -> None:
        self._url = plain_url(url)
        self._own_listener = own_listener  # the server pid of this process's listener, if it has one
        self._alone_until = 0.0  # until then, nobody else listens: nothing is sent
        self._others_until = 0.0  # until then, another process listens: sent without looking again
        self._pending: set[str] = set()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The server process of the connection it sends from: this process's own wake-ups come back from
        # there to its listener, and were delivered in this process already, at commit.
        self.sender_pid: int | None = None
        self._conn: asyncpg.Connection | None = None  # opened by ``start``, for the first wake-ups

    def heard_from_another(self) -> None:
        """Another process's listener has connected: send to it from now on."""
        self._alone_until = 0.0
        self._others_until = time.monotonic() + ALONE_SECONDS

    def send(self, keys: set[str]) -> None:
        if not keys or time.monotonic() < self._alone_until:
            return
        self._pending |= keys
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="workloom-notifier")

    async def start(self) -> None:
        """Look once, now, whether anybody else listens (else the first wake-ups would be sent to find out)."""
        try:
            self._conn = await self._connect()
            await self._alone(self._conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("wake-ups will look for other processes when first sent", extra={"error": type(exc).__name__})

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._url, server_settings={"synchronous_commit": "off"})
        self.sender_pid = conn.get_server_pid()
        return conn

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _run(self) -> None:
        conn, self._conn = self._conn, None
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                keys, self._pending = self._pending, set()
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    if await self._alone(conn):
                        continue
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

    async def _alone(self, conn: asyncpg.Connection) -> bool:
        """Whether no other process listens (looked up, and what was found trusted for ``ALONE_SECONDS``)."""
        now = time.monotonic()
        if now < self._others_until:
            return False
        others = await conn.fetchval(_OTHER_LISTENERS, LISTENER_NAME, self._own_listener() or 0)
        if others:
            self._others_until = now + ALONE_SECONDS
            return False
        self._alone_until = now + ALONE_SECONDS
        return True


class Listener:
    """Holds one LISTEN connection and hands each notification's keys to ``on_keys``; reconnects if dropped."""

    def __init__(
        self,
        url: str,
        on_keys: Callable[[list[str]], None],
        *,
        own: Callable[[int], bool] = lambda _pid: False,
        on_hello: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = plain_url(url)
        self._on_keys = on_keys
        self._own = own
        self._on_hello = on_hello
        self.pid: int | None = None  # its connection's server process
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
                conn = await asyncpg.connect(self._url, server_settings={"application_name": LISTENER_NAME})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("listener cannot connect, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._deliver)
                self.pid = conn.get_server_pid()
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, HELLO)
                self.connected.set()
                # Everything may have changed while disconnected: wake every waiter once.
                self._on_keys(["*"])
                await lost.wait()
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close()

    def _deliver(self, _conn: object, pid: int, _channel: str, payload: str) -> None:
        if payload == HELLO:
            if pid != self.pid:
                self._on_hello()
            return
        # This process's own wake-ups woke its waiters at commit; handed over again, each would wake one
        # more long-polling claimer for work already taken.
        if not self._own(pid):
            self._on_keys(payload.split())


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()
