"""A thin driver over the engine for tests: one workspace's principal, a manual clock, short names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from workloom.domain.actors import Actor
from workloom.domain.clock import ManualClock
from workloom.domain.models import Claim, Event, Queue, Run, Task
from workloom.domain.queries import ListQuery, Page
from workloom.engine import queues, runs, tasks
from workloom.engine.principal import Principal
from workloom.engine.queues import QueueSettings
from workloom.engine.service import Workloom
from workloom.engine.tasks import NewTask
from workloom.engine.ticker import TickResult
from workloom.engine.unit import Unit

T = TypeVar("T")
WORKER = Actor("agent_session", "worker-1")


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait for an observable condition of the engine that no event announces, polled within a bound."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (no event to await: poll the state, bounded)
            await asyncio.sleep(0.005)


@dataclass
class Harness:
    wl: Workloom
    principal: Principal
    clock: ManualClock

    @classmethod
    async def open(cls, wl: Workloom, clock: ManualClock, workspace: str = "acme", role: str = "admin") -> Harness:
        key = await wl.access.create_key(workspace, role)
        return cls(wl, await wl.access.authenticate(key.secret), clock)

    async def other_workspace(self, workspace: str) -> Harness:
        return await Harness.open(self.wl, self.clock, workspace)

    async def do(self, op: Callable[[Unit], Awaitable[T]]) -> T:
        return await self.wl.run(self.principal, op)

    # -- queues and tasks ----------------------------------------------------------------------------

    async def queue(self, name: str, **settings: Any) -> Queue:
        return await self.do(lambda u: queues.create(u, name, QueueSettings(**settings)))

    async def create(self, title: str = "task", **fields: Any) -> Task:
        return await self.do(lambda u: tasks.create(u, NewTask(title=title, **fields)))

    async def task(self, task_id: str) -> Task:
        return await self.do(lambda u: tasks.get(u, task_id))

    async def list(self, query: ListQuery) -> Page[Task]:
        return await self.do(lambda u: tasks.list_tasks(u, query))

    async def runs(self, task_id: str) -> list[Run]:
        return await self.do(lambda u: runs.list_for_task(u, task_id))

    async def run(self, run_id: str) -> Run:
        return await self.do(lambda u: runs.get(u, run_id))

    # -- runs --------------------------------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        *,
        limit: int = 1,
        lease_seconds: int | None = None,
        worker: Actor = WORKER,
        start: bool = False,
        wait_seconds: float = 0,
    ) -> list[Claim]:
        _, claims = await self.wl.claim(
            self.principal,
            queue,
            worker,
            limit=limit,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            render=lambda found: (200, found),
            start=start,
        )
        return list(claims)

    async def claim_one(self, queue: str, **kwargs: Any) -> Claim:
        claims = await self.claim(queue, **kwargs)
        assert len(claims) == 1, f"expected one claim from {queue!r}, got {len(claims)}"
        return claims[0]

    async def complete(self, claim: Claim, result: Any = None) -> Run:
        return await self.do(lambda u: runs.complete(u, claim.run.id, claim.claim_token, result))

    async def fail(self, claim: Claim, error: str = "boom", *, retryable: bool = True) -> Run:
        return await self.do(lambda u: runs.fail(u, claim.run.id, claim.claim_token, error, retryable))

    async def release(self, claim: Claim, reason: str | None = None) -> Run:
        return await self.do(lambda u: runs.release(u, claim.run.id, claim.claim_token, reason))

    async def heartbeat(self, claim: Claim, extend_seconds: int | None = None) -> Run:
        return await self.do(lambda u: runs.heartbeat(u, claim.run.id, claim.claim_token, extend_seconds))

    # -- time and history ------------------------------------------------------------------------------

    async def advance(self, seconds: float) -> TickResult:
        """Move the clock and let the ticker fire whatever is now due."""
        self.clock.advance(seconds)
        return await self.wl.ticker.tick()

    async def timeline(self, task_id: str) -> list[Event]:
        return await self.wl.events.timeline(self.principal, task_id)

    async def event_types(self, task_id: str) -> list[str]:
        return [event.type for event in await self.timeline(task_id)]
