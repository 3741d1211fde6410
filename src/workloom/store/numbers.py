"""Task numbers on PostgreSQL, reserved in a short transaction of their own.

Reserving inside the creating transaction locks the workspace row until that transaction commits, so
every create in a workspace would wait for the previous one's commit to reach the disk: creates one at
a time, at the disk's flush rate. Here the counter moves in its own one-statement transaction, on
connections of its own, committed with ``synchronous_commit = off`` (the row is locked for
microseconds, not for a flush). That is safe: a task that uses a number commits durably *after* the
reservation committed, and a durable commit flushes the log up to its own record, so the reservation
is on disk before any task that holds its number. A crash or a rolled-back create leaves a gap in the
numbers, never a duplicate.
"""

from __future__ import annotations

import asyncio

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


class TaskNumbers:
    def __init__(self, url: str, *, connections: int = 2) -> None:
        self._url = plain_url(url)
        self._connections = connections
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def reserve(self, workspace_id: str, count: int) -> int:
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
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None
