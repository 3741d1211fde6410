"""Queues: named channels of work and the defaults their tasks inherit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workloom.domain.errors import Conflict, NotFound
from workloom.domain.ids import new_id
from workloom.domain.models import Queue
from workloom.engine.events import record
from workloom.engine.lifecycle import settle
from workloom.engine.signals import queues_changed_key
from workloom.engine.unit import Unit
from workloom.store import queues as store
from workloom.store import tasks as task_store


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Everything a queue lets you set; ``None`` means "keep the default" (or "unchanged" on update)."""

    description: str | None = None
    lease_seconds: int | None = None
    max_attempts: int | None = None
    initial_interval_seconds: float | None = None
    backoff_coefficient: float | None = None
    max_interval_seconds: float | None = None
    start_mode: str | None = None

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


DEFAULTS = QueueSettings(
    description=None,
    lease_seconds=300,
    max_attempts=3,
    initial_interval_seconds=1.0,
    backoff_coefficient=2.0,
    max_interval_seconds=300.0,
    start_mode="auto",
)


async def create(u: Unit, name: str, settings: QueueSettings) -> Queue:
    u.principal.require("queues.write")
    if await store.queue_get_by_name(u.conn, u.workspace_id, name) is not None:
        raise Conflict(f"a queue named {name!r} exists already; update it with PATCH /v1/queues/{name}")
    queue = await _insert(u, name, settings)
    if queue is None:
        raise Conflict(f"a queue named {name!r} exists already")
    return queue


async def lookup(u: Unit, name: str) -> Queue | None:
    """The queue of that name, from the runner's cache when it has it (creates and claims ask each time)."""
    cache = u.queue_cache
    if cache is not None:
        hit = cache.get(u.workspace_id, name)
        if hit is not None:
            return hit
    found = await store.queue_get_by_name(u.conn, u.workspace_id, name)
    if found is not None and cache is not None:
        cache.put(found)
    return found


async def ensure(u: Unit, name: str) -> Queue:
    """The queue of that name, created with defaults if a task names it before anyone made it."""
    existing = await lookup(u, name)
    if existing is not None:
        return existing
    created = await _insert(u, name, QueueSettings())
    if created is not None:
        return created
    winner = await store.queue_get_by_name(u.conn, u.workspace_id, name)
    assert winner is not None
    return winner


async def _insert(u: Unit, name: str, settings: QueueSettings) -> Queue | None:
    values = {**DEFAULTS.changes(), **settings.changes()}
    queue = Queue(
        id=new_id("q"),
        workspace_id=u.workspace_id,
        name=name,
        description=values.get("description"),
        lease_seconds=values["lease_seconds"],
        max_attempts=values["max_attempts"],
        initial_interval_seconds=values["initial_interval_seconds"],
        backoff_coefficient=values["backoff_coefficient"],
        max_interval_seconds=values["max_interval_seconds"],
        start_mode=values["start_mode"],
        created_at=u.now,
        updated_at=u.now,
    )
    if not await store.queue_insert(u.conn, queue):
        return None
    await record(u, "queue.created", payload={"queue": name})
    return queue


async def get(u: Unit, name: str, *, cached: bool = False) -> Queue:
    queue = await (lookup(u, name) if cached else store.queue_get_by_name(u.conn, u.workspace_id, name))
    if queue is None:
        raise NotFound(f"queue {name!r} not found")
    return queue


async def update(u: Unit, name: str, settings: QueueSettings) -> Queue:
    u.principal.require("queues.write")
    queue = await get(u, name)
    changes = settings.changes()
    if changes:
        await store.queue_update(u.conn, u.workspace_id, queue.id, {**changes, "updated_at": u.now})
        await record(u, "queue.updated", payload={"queue": name, "changes": changes})
        u.wake(queues_changed_key(u.workspace_id))  # every process drops the queues it keeps
    if changes.get("start_mode") == "auto" and queue.start_mode != "auto":
        # Tasks that were waiting for an explicit start are owed their runs now.
        for task_id in await task_store.task_ids_ready_without_run(u.conn, u.workspace_id, queue.id):
            task = await task_store.task_get(u.conn, u.workspace_id, task_id, lock=True)
            if task is not None:
                await settle(u, task)
    return await get(u, name)


async def ids_by_name(u: Unit, names: list[str]) -> dict[str, str]:
    """Name -> id of those of ``names`` that are queues of the workspace."""
    return await store.queue_ids_by_name(u.conn, u.workspace_id, names)


async def list_all(u: Unit) -> list[Queue]:
    return await store.queue_list(u.conn, u.workspace_id)
