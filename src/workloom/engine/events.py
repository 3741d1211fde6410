"""Recording events: written in the same transaction as the change they describe (transactional outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from workloom.domain.actors import Actor
from workloom.domain.errors import NotFound
from workloom.domain.models import Event
from workloom.engine.principal import Principal
from workloom.engine.signals import Signals, events_key
from workloom.engine.unit import Unit
from workloom.store import events as store
from workloom.store import tasks as task_store
from workloom.store.database import Database


async def record(
    u: Unit,
    type: str,
    *,
    task_id: str | None = None,
    run_id: str | None = None,
    payload: dict[str, Any] | None = None,
    actor: Actor | None = None,
    task_sequence: int | None = None,
) -> None:
    """Append one event to the unit of work; it is written with the others just before commit, and a
    task's events get consecutive numbers in that task's own sequence (``task_sequence`` given: the
    number is already taken, by a task created in this unit with its event count)."""
    who = actor or u.principal.actor
    u.events.append(
        {
            "workspace_id": u.workspace_id,
            "task_id": task_id,
            "run_id": run_id,
            "task_sequence": task_sequence,
            "type": type,
            "actor_kind": who.kind,
            "actor_ref": who.ref,
            "origin_kind": u.principal.origin.kind,
            "origin_ref": u.principal.origin.ref,
            "payload": payload or {},
            "created_at": u.now,
        }
    )
    u.wake(events_key(u.workspace_id))


# A writer left idle inside its transaction would hold every stream back; past this wait, deliver anyway.
HORIZON_PATIENCE = timedelta(seconds=5)


_Batch = tuple[list[tuple[Event, int | None]], int | None]


class EventReader:
    """Reads the log for timelines and streams; streams wait on wake-ups rather than polling hard."""

    def __init__(self, db: Database, signals: Signals, poll_seconds: float = 1.0) -> None:
        self.db = db
        self.signals = signals
        self.poll_seconds = poll_seconds
        self._reads: dict[tuple[str, int], asyncio.Future[_Batch]] = {}

    async def timeline(
        self, principal: Principal, task_id: str, after_sequence: int = 0, limit: int = 1000
    ) -> list[Event]:
        async with self.db.read() as conn:
            task = await task_store.task_get(conn, principal.workspace_id, task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            return await store.event_list_for_task(
                conn, principal.workspace_id, task.id, after_sequence=after_sequence, limit=limit
            )

    async def last_sequence(self, principal: Principal) -> int:
        async with self.db.read() as conn:
            return await store.event_last_sequence(conn, principal.workspace_id)

    async def follow_task(
        self, principal: Principal, task_id: str, after_sequence: int, stop: asyncio.Event | None = None
    ) -> AsyncIterator[Event]:
        """Every event of one task after ``after_sequence``, then new ones as they happen."""
        cursor = after_sequence
        with self.signals.waiter(events_key(principal.workspace_id)) as waiter:
            while stop is None or not stop.is_set():
                # Shielded: a stream is stopped by cancelling it, and a read cancelled mid-query loses its
                # connection without closing it (on SQLite, still holding the database's write lock).
                batch = await asyncio.shield(self.timeline(principal, task_id, cursor, limit=500))
                for event in batch:
                    cursor = event.task_sequence or cursor
                    yield event
                if not batch:
                    await waiter.wait(self.poll_seconds)

    async def follow(
        self,
        principal: Principal,
        after: int,
        *,
        types: list[str] | None = None,
        task_id: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[Event]:
        """The workspace's events after global sequence ``after``, in order, never passing a row that an
        earlier, still-uncommitted transaction could precede (so a resumed stream misses nothing)."""
        cursor = after
        waiting_on: int | None = None  # the oldest open transaction we are waiting for
        waiting_since = datetime.now(UTC)
        given_up_on: int | None = None  # one that stayed open past our patience: no longer waited for
        with self.signals.waiter(events_key(principal.workspace_id)) as waiter:
            while stop is None or not stop.is_set():
                batch, horizon = await self._read_after(principal.workspace_id, cursor)
                held = False
                for event, commit_horizon in batch:
                    if (
                        horizon is not None
                        and horizon != given_up_on
                        and commit_horizon is not None
                        and commit_horizon > horizon
                    ):
                        if waiting_on != horizon:
                            waiting_on, waiting_since = horizon, datetime.now(UTC)
                        if datetime.now(UTC) - waiting_since < HORIZON_PATIENCE:
                            held = True
                            break
                        given_up_on = horizon
                    cursor = event.sequence
                    if (types and event.type not in types) or (task_id and event.task_id != task_id):
                        continue
                    yield event
                if held:
                    await asyncio.sleep(0.02)  # an in-flight transaction ends within milliseconds
                elif len(batch) < 500:
                    await waiter.wait(self.poll_seconds)

    async def _read_after(self, workspace_id: str, cursor: int) -> _Batch:
        """One database read shared by every stream of the workspace waiting at the same cursor: a new
        event wakes all of them at once, and a thousand subscribers should cost one query, not a thousand."""
        key = (workspace_id, cursor)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._read_batch(workspace_id, cursor))
            self._reads[key] = shared
            shared.add_done_callback(lambda _f: self._reads.pop(key, None))
        return await asyncio.shield(shared)

    async def _read_batch(self, workspace_id: str, cursor: int) -> _Batch:
        async with self.db.read() as conn:
            batch = await store.event_list_after(conn, workspace_id, after=cursor, limit=500)
            horizon = await store.event_stable_horizon(conn) if batch else None
        return batch, horizon
