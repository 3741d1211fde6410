"""Run use cases: claim under a lease, start, heartbeat, complete, fail, release; fencing of stale holders."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from workloom.domain import run_states
from workloom.domain.actors import TICKER, Actor
from workloom.domain.errors import NotFound, StaleClaim
from workloom.domain.models import Claim, Run, Task
from workloom.domain.secrets import hash_secret, matches, new_secret
from workloom.engine import queues
from workloom.engine.events import record
from workloom.engine.lifecycle import move_run, move_task, release_dependents, schedule_retry, task_queue
from workloom.engine.unit import Unit
from workloom.store import runs as store
from workloom.store import tasks as task_store
from workloom.store import timers as timer_store

MAX_LEASE_SECONDS = 24 * 3600
# A result that arrives after the run was taken away from its holder is kept for inspection; a repeat
# of the holder's own complete/fail is merely refused.
LATE_END_REASONS = ("lease_expired", "released", "task_canceled", "task_blocked", "queue_removed")


async def get(u: Unit, run_id: str) -> Run:
    run = await store.run_get(u.conn, u.workspace_id, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


async def list_for_task(u: Unit, task_id: str) -> list[Run]:
    task = await task_store.task_get(u.conn, u.workspace_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return await store.run_list_for_task(u.conn, task.id)


async def claim(u: Unit, queue_name: str, worker: Actor, limit: int, lease_seconds: int | None) -> list[Claim]:
    """Claim up to ``limit`` runs; each is handed to exactly one claimer, with a token only it holds."""
    u.principal.require("runs.work")
    queue = await queues.get(u, queue_name)
    candidates = await store.run_claim_candidates(
        u.conn, workspace_id=u.workspace_id, queue_id=queue.id, now=u.now, limit=limit
    )
    if not candidates:
        return []
    lease_until = u.now + timedelta(seconds=lease_seconds or queue.lease_seconds)
    tokens = {run.id: new_secret("clm") for run in candidates}
    await store.run_mark_claimed(
        u.conn,
        [
            {
                "run_id": run.id,
                "token_hash": hash_secret(tokens[run.id]),
                "now": u.now,
                "lease": lease_until,
                "kind": worker.kind,
                "ref": worker.ref,
            }
            for run in candidates
        ],
    )
    claims = []
    tasks = {t.id: t for t in await task_store.task_get_many(u.conn, u.workspace_id, [r.task_id for r in candidates])}
    for run in candidates:
        claimed = replace(
            run,
            queue=queue.name,
            status="claimed",
            claim_token_hash=hash_secret(tokens[run.id]),
            claimed_at=u.now,
            heartbeat_at=u.now,
            lease_until=lease_until,
            claimed_by=worker,
        )
        await record(
            u,
            "run.claimed",
            task_id=run.task_id,
            run_id=run.id,
            actor=worker,
            payload={
                "from_status": "queued",
                "status": "claimed",
                "attempt": run.attempt,
                "lease_until": lease_until.isoformat(),
            },
        )
        task = tasks[run.task_id]
        if task.status in ("ready", "scheduled"):
            if task.status == "scheduled":
                await timer_store.timer_delete_for_task(u.conn, task.id, "retry")
                task = await move_task(u, task, "fire", event="task.ready", actor=worker)
            task = await move_task(u, task, "claim", event="task.in_progress", run_id=run.id, actor=worker)
        claims.append(Claim(task=task, run=claimed, claim_token=tokens[run.id], lease_until=lease_until))
    return claims


async def _held(u: Unit, run_id: str, token: str, *, late: dict[str, Any] | None = None) -> tuple[Run, Task] | None:
    """The run and its task, if ``token`` is the run's current claim and the lease has not run out.

    A wrong token is refused at once. A token that did hold the run but no longer does (lease expired,
    released, canceled) is refused *after commit*: a lapsed lease is expired here and now, and a late
    result (``late``) is kept as a ``run.late_result`` event. Returns None when a refusal is pending.
    """
    run = await store.run_get(u.conn, u.workspace_id, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if not matches(token, run.claim_token_hash):
        raise StaleClaim(
            "this claim token does not hold the run; claim the task again", run_id=run.id, run_status=run.status
        )
    task = await task_store.task_get(u.conn, u.workspace_id, run.task_id, lock=True)
    assert task is not None
    if run_states.is_held(run.status):
        assert run.lease_until is not None
        if run.lease_until > u.now:
            return run, task
        run = await expire(u, run, task)
        refusal = StaleClaim(
            "the lease ran out before this call; the run was ended and the task requeued",
            run_id=run.id,
            run_status=run.status,
        )
    else:
        refusal = StaleClaim(
            f"the run is {run.status} ({run.end_reason or 'ended'}); its lease is no longer held",
            run_id=run.id,
            run_status=run.status,
        )
    if late is not None and run.end_reason in LATE_END_REASONS:
        await record(
            u,
            "run.late_result",
            task_id=run.task_id,
            run_id=run.id,
            payload={**late, "run_status": run.status, "reason": refusal.detail},
        )
    u.refuse_after_commit(refusal)
    return None


async def start(u: Unit, run_id: str, token: str) -> Run:
    u.principal.require("runs.work")
    held = await _held(u, run_id, token)
    if held is None:
        return await get(u, run_id)
    run = held[0]
    if run.status == "running":
        return run
    return await move_run(u, run, "start", started_at=u.now)


async def heartbeat(
    u: Unit, run_id: str, token: str, extend_seconds: int | None, progress: Any = None, usage: Any = None
) -> Run:
    """Extend the lease. Not an event: heartbeats are frequent and change no state anyone waits on."""
    u.principal.require("runs.work")
    held = await _held(u, run_id, token)
    if held is None:
        return await get(u, run_id)
    run = held[0]
    # By default a heartbeat renews the lease for as long as it was last granted.
    granted = (run.lease_until - run.heartbeat_at).total_seconds() if run.lease_until and run.heartbeat_at else 0
    seconds = extend_seconds or max(granted, 1)
    values: dict[str, Any] = {"heartbeat_at": u.now, "lease_until": u.now + timedelta(seconds=seconds)}
    if progress is not None:
        values["progress"] = progress
    if usage is not None:
        values["usage"] = usage
    await store.run_update(u.conn, run.id, values, expected_status=run.status)
    if progress is not None:
        await record(u, "run.progress", task_id=run.task_id, run_id=run.id, payload={"progress": progress})
    return replace(run, **values)


async def complete(u: Unit, run_id: str, token: str, result: Any, usage: Any = None) -> Run:
    u.principal.require("runs.work")
    held = await _held(u, run_id, token, late={"action": "complete", "result": result})
    if held is None:
        return await get(u, run_id)
    run, task = held
    values: dict[str, Any] = {"result": result, "end_reason": "completed"}
    if usage is not None:
        values["usage"] = usage
    run = await move_run(u, run, "complete", **values)
    u.tally("completions")
    task = await move_task(
        u, task, "complete", event="task.completed", run_id=run.id, output=result, attempts=task.attempts + 1
    )
    await release_dependents(u, task)
    return run


async def fail(u: Unit, run_id: str, token: str, error: str, retryable: bool = True) -> Run:
    u.principal.require("runs.work")
    held = await _held(u, run_id, token, late={"action": "fail", "error": error, "retryable": retryable})
    if held is None:
        return await get(u, run_id)
    run, task = held
    run = await move_run(
        u,
        run,
        "fail",
        error=error,
        end_reason="failed" if retryable else "failed_permanently",
        payload={"error": error, "retryable": retryable},
    )
    await _after_failure(u, task, run, error, retryable)
    return run


async def _after_failure(u: Unit, task: Task, run: Run, error: str, retryable: bool) -> None:
    """Queue the next attempt after the queue's backoff, or fail the task when attempts are spent."""
    queue = await task_queue(u, task)
    attempts = task.attempts + 1
    max_attempts = task.max_attempts or (queue.max_attempts if queue else 1)
    if retryable and queue is not None and attempts < max_attempts:
        await task_store.task_update(u.conn, task.id, {"attempts": attempts})
        task = replace(task, attempts=attempts)
        await schedule_retry(
            u, task, queue, attempt=attempts + 1, delay=queue.retry_policy.delay_after(attempts), run_id=run.id
        )
    else:
        await move_task(
            u,
            task,
            "fail",
            event="task.failed",
            run_id=run.id,
            error=error,
            attempts=attempts,
            payload={"error": error, "attempts": attempts},
        )


async def expire(u: Unit, run: Run, task: Task) -> Run:
    """The lease ran out: the run fails as ``lease_expired`` and the task is retried like any failure."""
    run = await move_run(
        u, run, "expire", event="run.lease_expired", actor=TICKER, error="lease_expired", end_reason="lease_expired"
    )
    await _after_failure(u, task, run, "lease_expired", retryable=True)
    return run


async def release(u: Unit, run_id: str, token: str, reason: str | None) -> Run:
    """Give the task back without spending an attempt: this run ends, a fresh one is queued at once."""
    u.principal.require("runs.work")
    held = await _held(u, run_id, token)
    if held is None:
        return await get(u, run_id)
    run, task = held
    run = await move_run(u, run, "release", event="run.released", end_reason="released", payload={"reason": reason})
    queue = await task_queue(u, task)
    assert queue is not None
    await schedule_retry(u, task, queue, attempt=run.attempt, delay=0, run_id=run.id)
    return run
