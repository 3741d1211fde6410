"""Cross-process wake-ups on PostgreSQL: NOTIFY inside the writing transaction, LISTEN on one connection.

NOTIFY is delivered only when the transaction commits, so a woken claimer always finds the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.database import plain_url

CHANNEL = "workloom"
log = logging.getLogger("workloom.store.notify")


async def notify(conn: AsyncConnection, keys: set[str]) -> None:
    if conn.dialect.name != "postgresql" or not keys:
        return
    await conn.execute(
        sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": " ".join(sorted(keys))}
    )


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
