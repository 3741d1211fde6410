"""The ticker: fires lease expiries, retry backoffs and due dates. Runs in every server process.

Each tick takes due rows with ``SKIP LOCKED`` (PostgreSQL), so any number of processes share the work
and any of them can die. The clock is injected: tests call ``tick()`` after moving it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import TICKER
from workloom.domain.clock import Clock
from workloom.engine import runs
from workloom.engine.events import record
from workloom.engine.lifecycle import move_task, wake_claimers
from workloom.engine.principal import Principal
from workloom.engine.unit import Runner, Unit
from workloom.store import runs as run_store
from workloom.store import statistics
from workloom.store import tasks as task_store
from workloom.store import timers as timer_store
from workloom.store.timers import Timer

log = logging.getLogger("workloom.ticker")
BATCH = 100
# Leases expired in one transaction (``Ticker._expire_some``).
EXPIRED_TOGETHER = 20
# Stored idempotent answers are kept a day; pruning them now and then is enough.
PRUNE_EVERY = 1000
# How often the hot tables' planner statistics are checked, and how far the tables' sizes must have moved
# for them to be stale: a queue filled in a burst is analysed within a second or two, not when autovacuum
# comes by.
STATISTICS_EVERY = 2
STALE_ROWS = 1000
STALE_FRACTION = 0.2


@dataclass(slots=True)
class TickResult:
    leases_expired: int = 0
    timers_fired: int = 0

    @property
    def busy(self) -> bool:
        return self.leases_expired + self.timers_fired > 0


def _system(workspace_id: str) -> Principal:
    return Principal(workspace_id=workspace_id, role="admin", actor=TICKER, origin=TICKER)


class Ticker:
    def __init__(self, runner: Runner, clock: Clock, interval: float = 0.5) -> None:
        self._runner = runner
        self._clock = clock
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.expired_total = 0

    async def tick(self) -> TickResult:
        """Fire everything due now; loops until nothing due is left."""
        total = TickResult()
        while True:
            expired = await self._expire_leases()
            fired = await self._fire_timers()
            total.leases_expired += expired
            total.timers_fired += fired
            if expired < BATCH and fired < BATCH:
                return total

    async def _expire_leases(self) -> int:
        """Up to ``BATCH`` runs whose leases ran out, ``EXPIRED_TOGETHER`` to a transaction (``_expire_some``)."""
        count = 0
        for _ in range(BATCH // EXPIRED_TOGETHER):
            found, expired = await self._expire_some()
            count += expired
            if found < EXPIRED_TOGETHER:
                break
        self.expired_total += count
        return count

    async def _expire_some(self) -> tuple[int, int]:
        """Runs whose leases ran out, expired in one transaction, each in a unit of its own (as its own
        transaction would be: its events, its retry, its wake-ups); how many were due, and how many expired.
        When a fleet of workers dies its leases run out together, and a transaction a run spent a good part
        of the work on beginning and committing (5,000 leases: 163 a second so, 211 a hundred to a
        transaction). A few at a time, not more: the transaction holds their runs and tasks locked, and on
        SQLite every other writer waits for it. Should it fail, each run is expired in a transaction of its
        own, so that one bad row cannot hold back the rest."""

        async def expire(conn: AsyncConnection, unit_for: Callable[[Principal], Unit]) -> tuple[int, int]:
            # Locked as read (SKIP LOCKED on PostgreSQL: another process takes others), each run's task after
            # it, as every path that locks both takes them. One active run a task: the units' tasks differ.
            due = await run_store.run_expired_leases(conn, self._clock.now(), EXPIRED_TOGETHER)
            return len(due), sum([await _expire_run(unit_for(_system(run.workspace_id)), run.id) for run in due])

        try:
            return await self._runner.run_together(expire)
        except Exception:
            # Also where the commit's outcome is unknown: each run is read again, and one expired is skipped.
            log.warning("expiring leases together failed; expiring them one by one", exc_info=True)
            return await self._expire_each()

    async def _expire_each(self) -> tuple[int, int]:
        async with self._runner.db.transaction() as conn:
            due = await run_store.run_expired_leases(conn, self._clock.now(), EXPIRED_TOGETHER)
        expired = 0
        for run in due:
            try:  # read again under its lock, and skipped if its holder renewed or finished meanwhile
                expired += await self._runner.run(_system(run.workspace_id), _expire_one(run.id))
            except Exception:
                log.exception("a lease could not be expired", extra={"run_id": run.id})
        return len(due), expired

    async def _fire_timers(self) -> int:
        wakeups: set[str] = set()
        async with self._runner.db.transaction() as conn:
            due = await timer_store.timer_take_due(conn, self._clock.now(), BATCH)
            for timer in due:
                unit = self._runner.unit(conn, _system(timer.workspace_id))
                await _fire(unit, timer)
                await unit.flush()
                wakeups |= unit.wakeups
        self._runner.publish(wakeups)
        self._runner.signals.notify(wakeups)
        return len(due)

    async def keep_statistics(self) -> list[str]:
        """Analyse the hot tables that grew or shrank enough since they last were; the tables analysed."""
        if not self._runner.db.is_postgres:
            return []  # SQLite plans by rule; a transaction here would only take its write lock
        async with self._runner.db.transaction() as conn:
            analysed = await statistics.analyze_stale(conn, minimum=STALE_ROWS, fraction=STALE_FRACTION)
        if analysed:
            log.debug("analysed %s", ", ".join(analysed))
        return analysed

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="workloom-ticker")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        passes = 0
        while not self._stopping.is_set():
            try:
                await self.tick()
                passes += 1
                if passes % PRUNE_EVERY == 1:
                    await self._runner.prune_idempotency()
                if passes % STATISTICS_EVERY == 0:
                    await self.keep_statistics()
            except Exception:
                log.exception("tick failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)


def _expire_one(run_id: str) -> Callable[[Unit], Awaitable[int]]:
    return lambda u: _expire_run(u, run_id)


async def _expire_run(u: Unit, run_id: str) -> int:
    run = await run_store.run_get(u.conn, u.workspace_id, run_id, lock=True)
    if (
        run is None
        or run.status not in ("claimed", "starting", "running")
        or run.lease_until is None
        or run.lease_until > u.now
    ):
        return 0
    task = await task_store.task_get(u.conn, u.workspace_id, run.task_id, lock=True)
    assert task is not None
    await runs.expire(u, run, task)
    return 1


async def _fire(u: Unit, timer: Timer) -> None:
    if timer.task_id is None:
        return
    task = await task_store.task_get(u.conn, u.workspace_id, timer.task_id, lock=True)
    if task is None:
        return
    if timer.kind == "retry":
        if task.status == "scheduled":
            await move_task(u, task, "fire", event="task.ready", payload={"timer": "retry"})
            if task.queue_id:
                wake_claimers(u, task.queue_id)
    elif timer.kind == "due":
        if task.closed_at is None and task.overdue_at is None and task.due_at is not None and task.due_at <= u.now:
            await task_store.task_update(u.conn, task.id, {"overdue_at": u.now})
            await record(u, "task.overdue", task_id=task.id, payload={"due_at": task.due_at.isoformat()})
    else:
        log.warning("unknown timer kind %s", timer.kind)
