"""Moving tasks and runs through their state machines: the only code that writes a status.

Every move applies the domain's transition table, writes the row guarded by the status it expects,
and appends the event, all in the caller's unit of work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from workloom.domain import run_states, task_states
from workloom.domain.actors import Actor
from workloom.domain.errors import Conflict
from workloom.domain.ids import new_id
from workloom.domain.models import Queue, Run, Task, changed
from workloom.domain.priority import RANK
from workloom.domain.readiness import Facts
from workloom.domain.readiness import settle as decide
from workloom.domain.run_states import RunAction, RunStatus
from workloom.domain.task_states import TaskAction
from workloom.engine.events import record
from workloom.engine.signals import queue_key, work_key
from workloom.engine.unit import Unit
from workloom.store import queues as queue_store
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store import timers as timer_store
from workloom.store.timers import Timer


async def move_task(
    u: Unit,
    task: Task,
    action: TaskAction,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    run_id: str | None = None,
    actor: Actor | None = None,
    **values: Any,
) -> Task:
    """Apply ``action`` to ``task``; writes the new status (and ``values``) only if nobody moved it first."""
    target = task_states.apply(task.status, action)
    values = {**values, "status": target, "updated_at": u.now}
    values.setdefault("blocked_reason", None)
    if task_states.is_final(target):
        values["closed_at"] = u.now
    if not await task_store.task_update(u.conn, task.id, values, expected_status=task.status):
        raise Conflict(f"task {task.identifier} changed while this request ran; retry it")
    moved = changed(task, **values)
    await record(
        u,
        event or f"task.{target}",
        task_id=task.id,
        run_id=run_id,
        actor=actor,
        payload={"from_status": task.status, "status": target, **(payload or {})},
    )
    return moved


async def move_run(
    u: Unit,
    run: Run,
    action: RunAction,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    actor: Actor | None = None,
    **values: Any,
) -> Run:
    target: RunStatus = run_states.apply(run.status, action)
    values = {**values, "status": target}
    if target in run_states.FINAL_RUN_STATUSES:
        values["ended_at"] = u.now
    if not await run_store.run_update(u.conn, run.id, values, expected_status=run.status):
        raise Conflict(f"run {run.id} changed while this request ran; retry it")
    moved = changed(run, **values)
    await record(
        u,
        event or ("run.started" if target == "running" else f"run.{target}"),
        task_id=run.task_id,
        run_id=run.id,
        actor=actor,
        payload={"from_status": run.status, "status": target, "attempt": run.attempt, **(payload or {})},
    )
    return moved


def wake_claimers(u: Unit, queue_id: str) -> None:
    """Work became claimable in this queue: wake its claimers and those taking from any queue."""
    u.wake(queue_key(queue_id))
    u.wake(work_key(u.workspace_id))


async def enqueue_run(
    u: Unit,
    task: Task,
    queue: Queue,
    *,
    attempt: int,
    available_at: datetime,
    idempotency_key: str | None = None,
) -> Run:
    run = new_run(u, task, queue, attempt=attempt, available_at=available_at, idempotency_key=idempotency_key)
    await run_store.run_insert(u.conn, run)
    await record(
        u,
        "run.queued",
        task_id=task.id,
        run_id=run.id,
        payload={"attempt": attempt, "queue": queue.name, "available_at": available_at.isoformat()},
    )
    if available_at <= u.now:
        wake_claimers(u, queue.id)
    return run


def new_run(
    u: Unit, task: Task, queue: Queue, *, attempt: int, available_at: datetime, idempotency_key: str | None = None
) -> Run:
    """A queued run of ``task`` (not written yet)."""
    return Run(
        id=new_id("run"),
        workspace_id=u.workspace_id,
        task_id=task.id,
        queue_id=queue.id,
        attempt=attempt,
        status="queued",
        priority_rank=RANK[task.priority],
        available_at=available_at,
        queued_at=u.now,
        claimed_at=None,
        started_at=None,
        ended_at=None,
        heartbeat_at=None,
        lease_until=None,
        claim_token_hash=None,
        claimed_by=None,
        end_reason=None,
        error=None,
        result=None,
        progress=None,
        usage=None,
        metadata=None,
        queue=queue.name,
        origin=u.principal.origin,
        idempotency_key=idempotency_key,
    )


async def task_queue(u: Unit, task: Task) -> Queue | None:
    if task.queue_id is None:
        return None
    return await queue_store.queue_get(u.conn, u.workspace_id, task.queue_id)


async def settle(u: Unit, task: Task, *, created_with: tuple[Queue | None, int] | None = None) -> Task:
    """Put a published task where its facts say: blocked (with the reason) or ready, with a run if due.

    ``created_with`` is (queue, open dependencies) for a task created in this unit: known already, and
    such a task cannot have a run yet.
    """
    if created_with is None:
        queue = await task_queue(u, task)
        dependencies_open = await task_store.dependency_open_count(u.conn, task.id)
    else:
        queue, dependencies_open = created_with
    facts = Facts(
        dependencies_open=dependencies_open,
        approval_policy=task.approval_policy,
        approval_state=task.approval_state,
        has_queue=queue is not None,
        queue_starts_automatically=queue is not None and queue.start_mode == "auto",
        start_requested=task.start_requested,
    )
    outcome = decide(facts)
    if outcome.blocked_reason is not None:
        if task.status == "draft":
            return await move_task(
                u, task, "publish_blocked", event="task.blocked", blocked_reason=outcome.blocked_reason
            )
        if task.status == "blocked" and task.blocked_reason == outcome.blocked_reason:
            return task
        if task_states.can(task.status, "block"):
            await cancel_queued_run(u, task)
            return await move_task(u, task, "block", event="task.blocked", blocked_reason=outcome.blocked_reason)
        return task  # a task already running is not pulled back by a new dependency
    if task.status == "draft":
        task = await move_task(u, task, "publish_ready", event="task.ready")
    elif task.status == "blocked":
        task = await move_task(u, task, "unblock", event="task.ready")
    if task.status == "ready" and outcome.enqueue_run and queue is not None:
        if created_with is not None or await run_store.run_active_for_task(u.conn, task.id) is None:
            await enqueue_run(u, task, queue, attempt=task.attempts + 1, available_at=u.now)
    return task


async def cancel_queued_run(u: Unit, task: Task) -> None:
    run = await run_store.run_active_for_task(u.conn, task.id, lock=True)
    if run is not None and run.status == "queued":
        await move_run(u, run, "cancel", end_reason="task_blocked")


async def release_dependents(u: Unit, task: Task) -> None:
    """A completed task may be the last thing its dependents were waiting for."""
    for dependent_id in await task_store.dependency_dependents(u.conn, task.id):
        dependent = await task_store.task_get(u.conn, u.workspace_id, dependent_id, lock=True)
        if dependent is not None and dependent.status == "blocked" and dependent.blocked_reason == "dependencies":
            await settle(u, dependent)


async def schedule_retry(u: Unit, task: Task, queue: Queue, *, attempt: int, delay: float, run_id: str) -> Task:
    """Queue the next attempt; with a delay the task waits ``scheduled`` until the ticker fires its timer."""
    available_at = u.now if delay <= 0 else u.now + timedelta(seconds=delay)
    if delay <= 0:
        task = await move_task(u, task, "requeue", event="task.ready", run_id=run_id, payload={"retry": True})
    else:
        task = await move_task(
            u,
            task,
            "retry_later",
            event="task.scheduled",
            run_id=run_id,
            payload={"retry_at": available_at.isoformat(), "attempt": attempt},
        )
        await timer_store.timer_insert(
            u.conn,
            Timer(
                id=new_id("tmr"),
                workspace_id=u.workspace_id,
                kind="retry",
                task_id=task.id,
                run_id=None,
                fire_at=available_at,
            ),
            u.now,
        )
    await enqueue_run(u, task, queue, attempt=attempt, available_at=available_at)
    return task
