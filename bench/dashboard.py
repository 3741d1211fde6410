"""How long one observer-dashboard read (and one inbox read) takes with many tasks in the store.

    python -m bench.dashboard [--tasks 100000] [--database-url URL] [--repeat 20] [--json]

Bulk-loads ``--tasks`` tasks (and their runs) straight through the store into a database of its own —
by default a new database on the local test PostgreSQL server (``postgresql://postgres@127.0.0.1:5432/
test``), dropped at the end; ``sqlite`` for a temp SQLite file; any other URL is used as given — then
times ``dashboard.observe`` (unfiltered, by queue, by owner) and ``triage.inbox`` in-process, each
``--repeat`` times after one warm-up call. Nothing is asserted: figures depend on the machine.

The mix is a long-running workspace: 70% completed, 6% failed, 4% canceled, 10% ready with a queued
run (over 10 queues), 4% blocked (dependencies or approval), 2% drafts, 1% waiting to retry, 200 tasks
in progress with held runs, the rest ready without a queue; one task in ten owned by a person.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

from workloom.domain.actors import Actor
from workloom.domain.clock import SystemClock
from workloom.domain.dashboard import DashboardFilters
from workloom.domain.ids import new_id
from workloom.domain.models import Queue, Run, Task
from workloom.domain.priority import PRIORITIES, RANK
from workloom.domain.secrets import hash_secret
from workloom.domain.triage import InboxFilters
from workloom.engine import dashboard, triage
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.store import queues as queue_store
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store import workspaces as workspace_store
from workloom.store.fast import write_all

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CHANNELS = [f"chan-{i}" for i in range(10)]
HELD = 200
BATCH = 5000
PERSON = "bench-human"
WORKER = Actor("agent_session", "bench-worker")
ORIGIN = Actor("http", "bench")


# -- the database -------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(url: str | None) -> AsyncIterator[str]:
    if url == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    base = url or DEFAULT_POSTGRES
    if not base.startswith("postgresql"):
        yield base
        return
    parsed = sa.engine.make_url(base)
    name = f"wl_bench_{uuid.uuid4().hex[:12]}"
    admin = parsed.render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# -- the data -------------------------------------------------------------------------------------------------


def _task(workspace_id: str, number: int, now: datetime, rng: random.Random, queue: Queue | None) -> Task:
    created = now - timedelta(seconds=rng.uniform(60, 30 * 86_400))
    return Task(
        id=new_id("task"),
        workspace_id=workspace_id,
        number=number,
        title=f"bench task {number}",
        description=None,
        queue_id=queue.id if queue else None,
        queue=queue.name if queue else None,
        data={"n": number},
        output=None,
        error=None,
        priority=rng.choice(PRIORITIES),
        status="ready",
        blocked_reason=None,
        draft=False,
        approval_policy="none",
        approval_state="not_required",
        parent_task_id=None,
        max_attempts=None,
        attempts=0,
        start_requested=False,
        due_at=None,
        overdue_at=None,
        owner=Actor("human", PERSON) if number % 10 == 0 else None,
        created_by=ORIGIN,
        origin=ORIGIN,
        metadata=None,
        event_sequence=3,
        created_at=created,
        updated_at=created,
        closed_at=None,
        last_activity_at=created,
    )


def _run(task: Task, queue: Queue, status: str, *, attempt: int = 1, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": new_id("run"),
        "workspace_id": task.workspace_id,
        "task_id": task.id,
        "queue_id": queue.id,
        "attempt": attempt,
        "status": status,
        "priority_rank": RANK[task.priority],
        "available_at": task.created_at,
        "queued_at": task.created_at,
        "claimed_at": None,
        "started_at": None,
        "ended_at": None,
        "heartbeat_at": None,
        "lease_until": None,
        "claim_token_hash": None,
        "claimed_by": None,
        "end_reason": None,
        "error": None,
        "result": None,
        "progress": None,
        "usage": None,
        "metadata": None,
        "origin": ORIGIN,
    }
    values.update(fields)
    return Run(**values)


def _worked(task: Task, queue: Queue, status: str, end_reason: str, seconds: float, **fields: Any) -> Run:
    claimed = task.created_at + timedelta(seconds=seconds)
    return _run(
        task,
        queue,
        status,
        claimed_at=claimed,
        started_at=claimed + timedelta(seconds=0.2),
        heartbeat_at=claimed,
        ended_at=claimed + timedelta(seconds=5),
        claimed_by=WORKER,
        claim_token_hash=hash_secret(task.id),
        end_reason=end_reason,
        **fields,
    )


def generate(workspace_id: str, queues: list[Queue], count: int, now: datetime) -> tuple[list[Task], list[Run]]:
    rng = random.Random(20300101)
    tasks: list[Task] = []
    runs: list[Run] = []
    for number in range(1, count + 1):
        queue = queues[number % len(queues)]
        task = _task(workspace_id, number, now, rng, queue)
        if number <= HELD:
            task.status, task.attempts = "in_progress", 0
            task.last_activity_at = now - timedelta(seconds=rng.uniform(1, 120))
            claimed = task.last_activity_at
            runs.append(
                _run(
                    task,
                    queue,
                    "running",
                    claimed_at=claimed,
                    started_at=claimed,
                    heartbeat_at=claimed,
                    lease_until=claimed + timedelta(seconds=300),
                    claimed_by=WORKER,
                    claim_token_hash=hash_secret(task.id),
                )
            )
            tasks.append(task)
            continue
        roll = rng.random()
        finished = task.created_at + timedelta(seconds=6)
        if roll < 0.70:
            task.status, task.closed_at, task.attempts, task.last_activity_at = "completed", finished, 1, finished
            runs.append(_worked(task, queue, "completed", "completed", rng.uniform(0, 3), result={"ok": True}))
        elif roll < 0.76:
            task.status, task.closed_at, task.attempts, task.error = "failed", finished, 1, "boom"
            task.last_activity_at = finished
            runs.append(_worked(task, queue, "failed", "failed", rng.uniform(0, 3), error="boom"))
        elif roll < 0.80:
            task.status, task.closed_at, task.last_activity_at = "canceled", finished, finished
            runs.append(_run(task, queue, "canceled", ended_at=finished, end_reason="task_canceled"))
        elif roll < 0.90:
            runs.append(_run(task, queue, "queued"))
        elif roll < 0.94:
            task.status = "blocked"
            if rng.random() < 0.5:
                task.blocked_reason = "dependencies"
            else:
                task.blocked_reason, task.approval_policy, task.approval_state = "approval", "required", "pending"
        elif roll < 0.96:
            task.status, task.draft, task.queue_id, task.queue = "draft", True, None, None
        elif roll < 0.97:
            task.status, task.attempts = "scheduled", 1
            runs.append(_worked(task, queue, "failed", "failed", 1.0, error="flaky"))
            retry_at = now + timedelta(seconds=rng.uniform(1, 600))
            runs.append(_run(task, queue, "queued", attempt=2, available_at=retry_at, queued_at=finished))
        else:
            task.queue_id, task.queue = None, None
        tasks.append(task)
    return tasks, runs


async def load(wl: Workloom, principal: Principal, count: int) -> float:
    started = time.perf_counter()
    now = wl.clock.now()
    async with wl.db.transaction() as conn:
        queues = []
        for name in CHANNELS:
            queue = Queue(new_id("q"), principal.workspace_id, name, None, 300, 3, 1.0, 2.0, 300.0, "auto", now, now)
            await queue_store.queue_insert(conn, queue)
            queues.append(queue)
        await workspace_store.workspace_next_task_numbers(conn, principal.workspace_id, count)
    tasks, runs = generate(principal.workspace_id, queues, count, now)
    for i in range(0, len(tasks), BATCH):
        async with wl.db.transaction() as conn:
            await write_all(conn, task_store.task_inserts(tasks[i : i + BATCH]))
    for i in range(0, len(runs), BATCH):
        async with wl.db.transaction() as conn:
            await write_all(conn, run_store.run_inserts(runs[i : i + BATCH]))
    return time.perf_counter() - started


# -- timing -----------------------------------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> dict[str, float]:
    await call()  # warm-up: connections, prepared statements
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "min_ms": round(samples[0], 2),
        "p95_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 2),
        "max_ms": round(samples[-1], 2),
    }


async def vacuum(wl: Workloom) -> None:
    """What autovacuum does in a live system: statistics and the visibility map (index-only scans)."""
    if wl.db.is_postgres:
        async with wl.db.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("VACUUM ANALYZE")
    else:
        async with wl.db.transaction() as conn:
            await conn.exec_driver_sql("ANALYZE")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with database(args.database_url) as url:
        wl = Workloom.from_url(url, SystemClock())
        try:
            await wl.migrate()
            admin = await wl.access.authenticate((await wl.access.create_key("bench", "admin")).secret)
            person_key = await wl.access.create_key("bench", "member", name=PERSON)
            person = await wl.access.authenticate(person_key.secret)
            load_seconds = await load(wl, admin, args.tasks)
            await vacuum(wl)
            board = await wl.run(admin, lambda u: dashboard.observe(u))

            def observe(filters: DashboardFilters) -> Callable[[], Awaitable[object]]:
                return lambda: wl.run(admin, lambda u: dashboard.observe(u, filters))

            figures: dict[str, Any] = {
                "database": wl.db.engine.dialect.name,
                "tasks": board.tasks_total,
                "runs": board.runs_total,
                "active_runs": board.active_runs_total,
                "load_seconds": round(load_seconds, 1),
                "observe": await timed(observe(DashboardFilters()), args.repeat),
                "observe_by_queue": await timed(observe(DashboardFilters(queue="chan-3")), args.repeat),
                "observe_by_owner": await timed(
                    observe(DashboardFilters(owner_kind="human", owner_ref=PERSON)), args.repeat
                ),
                "inbox": await timed(lambda: wl.run(person, lambda u: triage.inbox(u, InboxFilters())), args.repeat),
            }
            return figures
        finally:
            await wl.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="postgresql://… (default: local test server), sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(main(args))
    if args.json:
        json.dump(figures, sys.stdout)
        print()
        return
    print(
        f"{figures['database']}: {figures['tasks']} tasks, {figures['runs']} runs "
        f"({figures['active_runs']} active), loaded in {figures['load_seconds']} s"
    )
    for name in ("observe", "observe_by_queue", "observe_by_owner", "inbox"):
        t = figures[name]
        print(
            f"  {name:<17} median {t['median_ms']:>8} ms   min {t['min_ms']:>8}   "
            f"p95 {t['p95_ms']:>8}   max {t['max_ms']:>8}"
        )


if __name__ == "__main__":
    cli()
