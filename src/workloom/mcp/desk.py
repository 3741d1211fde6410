"""The MCP server's working memory: the runs its sessions hold, their claim tokens, and their heartbeats.

A claim token proves the lease on a run; whoever has it can complete or fail that run. The desk keeps every
token in this process's memory, keyed by run id, and never hands it to the model: a tool names a run by its
id and the desk adds the token. So a model cannot leak a token into a prompt, a log or another tool, and
cannot act on a run its own session did not claim. The price is that a run belongs to this process: if the
MCP server stops, its runs are released (or, after a crash, their leases run out and the tasks go back to
their queues).

While a run is held, the desk heartbeats it in the background every third of its lease, so an agent that
thinks for a long time between tool calls keeps it. The heartbeat stops when the run is completed, failed
or released, when its lease is lost, when the MCP session that claimed it ends (its runs are released),
and when the server shuts down (every run still held is released).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from workloom.client import (
    Actor,
    AsyncClient,
    Claim,
    Run,
    StaleClaimError,
    Task,
    WorkloomError,
)

log = logging.getLogger("workloom.mcp")

HEARTBEAT_FRACTION = 3  # heartbeat every lease / 3
MIN_HEARTBEAT_SECONDS = 0.5
RETRY_HEARTBEAT_SECONDS = 5.0  # after a heartbeat that failed for a passing reason (server down, timeout)
RELEASE_TIMEOUT_SECONDS = 10.0  # the bound on releasing everything at shutdown
LOST_MEMORY = 1000  # how many lost runs are remembered to explain later calls on them
FINAL_TASK_STATUSES = frozenset({"completed", "failed", "skipped", "canceled"})


class DeskError(Exception):
    """A request the desk refuses before asking the server (an unknown run, too many held runs)."""


class LeaseLost(DeskError):
    """The run's lease is gone: its token was refused, so the run may now be someone else's."""


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """How the desk reaches Workloom and who it claims as."""

    base_url: str | None = None  # WORKLOOM_URL when None
    api_key: str | None = None  # WORKLOOM_API_KEY when None
    worker: Actor = field(default_factory=lambda: Actor(kind="agent_session", ref="mcp"))
    max_held: int = 10
    timeout: float = 30.0
    # Release a run no session owns (the 2026-07-28 protocol has no sessions) once no tool call has named it
    # for this long: over HTTP nothing else tells the desk that its agent is gone. None: never.
    idle_release_seconds: float | None = None


@dataclass(eq=False)
class Holding:
    """One run this process holds: the secret token and the heartbeat that keeps the lease."""

    run_id: str
    task_id: str
    token: str
    lease_seconds: int
    lease_until: datetime
    owner: object | None  # the MCP connection that claimed it (None: not known, so the process's)
    lock: anyio.Lock = field(default_factory=anyio.Lock)  # one call at a time on the run, heartbeats included
    beat_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    usage: dict[str, Any] = field(default_factory=dict)  # the latest total of each usage counter reported
    touched: float = field(default_factory=anyio.current_time)  # when a tool call last named the run
    beats: int = 0
    last_beat_error: str | None = None
    active: bool = True

    @property
    def heartbeat_every(self) -> float:
        return max(self.lease_seconds / HEARTBEAT_FRACTION, MIN_HEARTBEAT_SECONDS)

    def add_usage(self, usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Every counter reported so far, each at its latest total (the server keeps only the last usage sent,
        so a report that names only some counters must not drop the others)."""
        if not usage:
            return None
        self.usage.update(usage)
        return dict(self.usage)


def granted_seconds(claim: Claim) -> int:
    """The length of the lease a claim granted, in whole seconds (at least 1)."""
    start = claim.run.claimed_at or claim.run.heartbeat_at
    if start is None:
        return 1
    return max(1, math.ceil((claim.lease_until - start).total_seconds()))


class Desk:
    """Holds runs for the MCP tools; open it with ``async with desk.open():`` around the server's life."""

    def __init__(self, config: DeskConfig, client_factory: Callable[[DeskConfig], AsyncClient] | None = None) -> None:
        self.config = config
        self._client_factory = client_factory or _default_client
        self._client: AsyncClient | None = None
        self._group: TaskGroup | None = None
        self._held: dict[str, Holding] = {}
        self._lost: dict[str, str] = {}
        self.closed: anyio.Event | None = None  # set once ``open()`` has released everything and closed

    # -- life -------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Desk]:
        """Connect the SDK client and run heartbeats; on the way out release every run still held."""
        client = self._client_factory(self.config)
        self._client = client
        self.closed = anyio.Event()
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                try:
                    yield self
                finally:
                    with anyio.move_on_after(RELEASE_TIMEOUT_SECONDS, shield=True):
                        await self.release_all(list(self._held.values()), "the MCP server stopped")
                    group.cancel_scope.cancel()
        finally:
            self._group = None
            with anyio.CancelScope(shield=True):
                await client.aclose()
            self._client = None
            self.closed.set()

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("the desk is not open")
        return self._client

    @property
    def held(self) -> list[Holding]:
        return list(self._held.values())

    # -- claiming ---------------------------------------------------------------------------------------

    async def claim(
        self, queue: str, *, owner: object | None, lease_seconds: int | None, wait_seconds: float
    ) -> tuple[Claim, Holding] | None:
        """Claim the next run of ``queue`` and start heartbeating it; ``None`` when none came within the wait."""
        mine = [h for h in self._held.values() if h.owner is owner]
        if len(mine) >= self.config.max_held:
            raise DeskError(
                f"this session already holds {len(mine)} runs (the limit is {self.config.max_held}); "
                "complete, fail or release one of them before claiming another"
            )
        claims = await self.client.claim(
            queue, worker=self.config.worker, lease_seconds=lease_seconds, wait_seconds=wait_seconds
        )
        if not claims:
            return None
        claim = claims[0]
        holding = Holding(
            run_id=claim.run.id,
            task_id=claim.task.id,
            token=claim.claim_token,
            lease_seconds=granted_seconds(claim),
            lease_until=claim.lease_until,
            owner=owner,
        )
        self._held[holding.run_id] = holding
        self._lost.pop(holding.run_id, None)
        self._start_heartbeat(holding)
        try:
            await self.client.start_run(holding.run_id, holding.token)
        except StaleClaimError as exc:
            self._forget(holding, f"the server refused to start the run: {exc}")
            raise LeaseLost(self._lost[holding.run_id]) from exc
        except WorkloomError as exc:  # the run stays claimed; complete and fail work from there too
            log.warning("could not mark run %s as running: %s", holding.run_id, exc)
        return claim, holding

    # -- calls on a held run ----------------------------------------------------------------------------

    def holding(self, run_id: str, owner: object | None) -> Holding:
        """The run as held by this session, or a ``DeskError`` that says why it is not."""
        found = self._held.get(run_id)
        if found is not None and found.active:
            if found.owner is not None and owner is not None and found.owner is not owner:
                raise DeskError(f"run {run_id} was claimed by another MCP session; only that session can use it")
            found.touched = anyio.current_time()
            return found
        reason = self._lost.get(run_id)
        if reason is not None:
            raise LeaseLost(f"run {run_id} is no longer held: {reason}")
        raise DeskError(
            f"run {run_id} is not held by this MCP server. Use the run_id that claim_next_task returned in this "
            "session; runs claimed elsewhere (another process, a worker, an earlier session) cannot be used here"
        )

    async def heartbeat(self, holding: Holding, *, progress: Any = None, usage: Mapping[str, Any] | None = None) -> Run:
        """Extend the lease now (and record progress and usage, when given)."""
        return await self._on_held(
            holding,
            lambda: self.client.heartbeat(
                holding.run_id,
                holding.token,
                extend_seconds=holding.lease_seconds,
                progress=progress,
                usage=holding.add_usage(usage),
            ),
            ended=None,
        )

    async def complete(self, holding: Holding, result: Any, usage: Mapping[str, Any] | None = None) -> Run:
        return await self._on_held(
            holding,
            lambda: self.client.complete_run(
                holding.run_id, holding.token, result=result, usage=holding.add_usage(usage)
            ),
            ended="it was completed",
        )

    async def fail(self, holding: Holding, error: str, retryable: bool) -> Run:
        return await self._on_held(
            holding,
            lambda: self.client.fail_run(holding.run_id, holding.token, error, retryable=retryable),
            ended="it was failed",
        )

    async def release(self, holding: Holding, reason: str | None) -> Run:
        return await self._on_held(
            holding,
            lambda: self.client.release_run(holding.run_id, holding.token, reason=reason),
            ended="it was released" + (f" ({reason})" if reason else ""),
        )

    async def release_all(self, holdings: list[Holding], reason: str) -> None:
        """Release the given runs concurrently; failures are logged (their leases run out on their own)."""

        async def one(holding: Holding) -> None:
            try:
                await self.release(holding, reason)
            except LeaseLost:  # ended meanwhile (completed, or released by another path)
                return
            except Exception as exc:  # the lease runs out on its own; the others must still be released
                log.warning("could not release run %s: %s", holding.run_id, exc)
            else:
                log.info("released run %s (%s)", holding.run_id, reason)

        async with anyio.create_task_group() as group:
            for holding in holdings:
                if holding.active:
                    group.start_soon(one, holding)

    async def release_owned(self, owner: object, reason: str = "the MCP session ended") -> None:
        """Release the runs one MCP session holds (called when that session closes)."""
        await self.release_all([h for h in self._held.values() if h.owner is owner], reason)

    async def _on_held(self, holding: Holding, call: Callable[[], Awaitable[Run]], *, ended: str | None) -> Run:
        """Make one call with the run's token, one at a time per run. A final call (complete, fail, release:
        ``ended`` says what happened) ends the holding when it succeeds; a refused token ends it in any case."""
        async with holding.lock:
            if not holding.active:
                raise LeaseLost(f"run {holding.run_id} is no longer held: {self._lost.get(holding.run_id, 'ended')}")
            try:
                run = await call()
            except StaleClaimError as exc:
                self._forget(holding, f"the server refused its claim token: {exc.detail or exc}")
                raise
            if ended is not None:
                self._forget(holding, ended)
            elif run.lease_until is not None:
                holding.lease_until = run.lease_until
            return run

    # -- heartbeats -------------------------------------------------------------------------------------

    def _start_heartbeat(self, holding: Holding) -> None:
        if self._group is None:
            raise RuntimeError("the desk is not open")
        self._group.start_soon(self._keep_alive, holding)

    async def _keep_alive(self, holding: Holding) -> None:
        with holding.beat_scope:
            delay = holding.heartbeat_every
            while holding.active:
                await anyio.sleep(delay)
                delay = holding.heartbeat_every
                if self._idle(holding):
                    await self.release_all([holding], "no tool call used it for a long time")
                    return
                try:
                    await self.heartbeat(holding)
                except (StaleClaimError, LeaseLost) as exc:
                    log.warning("lost the lease on run %s: %s", holding.run_id, exc)
                    return
                except Exception as exc:  # a passing failure (server restarting, timeout): try again soon
                    holding.last_beat_error = str(exc)
                    delay = min(RETRY_HEARTBEAT_SECONDS, delay)
                    log.warning("heartbeat of run %s failed, retrying in %.0fs: %s", holding.run_id, delay, exc)
                else:
                    holding.beats += 1
                    holding.last_beat_error = None

    def _idle(self, holding: Holding) -> bool:
        limit = self.config.idle_release_seconds
        return holding.owner is None and limit is not None and anyio.current_time() - holding.touched > limit

    def _forget(self, holding: Holding, reason: str) -> None:
        holding.active = False
        holding.beat_scope.cancel()
        if self._held.get(holding.run_id) is holding:
            del self._held[holding.run_id]
        self._lost[holding.run_id] = reason
        while len(self._lost) > LOST_MEMORY:
            del self._lost[next(iter(self._lost))]

    # -- people -----------------------------------------------------------------------------------------

    async def await_task(
        self, task_id: str, wait_seconds: float, on_wait: Callable[[float], Awaitable[None]] | None = None
    ) -> Task:
        """The task once it is closed (completed, failed, skipped, canceled), or as it is after ``wait_seconds``.

        Follows the task's event stream (which replays its history first, so nothing is missed between the
        first read and the stream opening); ``on_wait(elapsed)`` is called about every 10 seconds meanwhile.
        """
        task = await self.client.get_task(task_id)
        if task.status in FINAL_TASK_STATUSES or wait_seconds <= 0:
            return task
        started = anyio.current_time()
        stream = self.client.stream_task(task.id)
        try:
            with anyio.move_on_after(wait_seconds):
                async with anyio.create_task_group() as group:
                    if on_wait is not None:
                        group.start_soon(_tick, on_wait, started)
                    async for event in stream:
                        status = event.payload.get("status")
                        if status in FINAL_TASK_STATUSES or event.type == "task.deleted":
                            break
                    group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        return await self.client.get_task(task.id)


async def _tick(on_wait: Callable[[float], Awaitable[None]], started: float, every: float = 10.0) -> None:
    while True:
        await anyio.sleep(every)
        await on_wait(anyio.current_time() - started)


def _default_client(config: DeskConfig) -> AsyncClient:
    return AsyncClient(config.base_url, config.api_key, timeout=config.timeout, worker=config.worker)
