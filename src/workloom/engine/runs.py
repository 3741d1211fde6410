"""Run use cases: claim under a lease, start, heartbeat, complete, fail, release; fencing of stale holders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, Self, TypeVar

from workloom.domain import run_states, task_states
from workloom.domain import usage as usage_rules
from workloom.domain.actors import TICKER, Actor
from workloom.domain.errors import (
    Conflict,
    FieldError,
    InvalidTransition,
    NotFound,
    NotHolder,
    StaleClaim,
    ValidationFailed,
    WorkloomError,
)
from workloom.domain.models import Claim, Queue, Run, Task, changed
from workloom.domain.run_states import RunStatus
from workloom.domain.secrets import hash_secret, matches, new_secret
from workloom.engine import queues
from workloom.engine.events import record
from workloom.engine.lifecycle import (
    enqueue_run,
    move_run,
    move_task,
    release_dependents,
    schedule_retry,
    task_queue,
)
from workloom.engine.signals import events_key, queue_key
from workloom.engine.unit import Unit
from workloom.store import held as held_store
from workloom.store import queues as queue_store
from workloom.store import runs as store
from workloom.store import tasks as task_store
from workloom.store import timers as timer_store
from workloom.store.fast import SentRead

MAX_LEASE_SECONDS = 24 * 3600
# A result that arrives after the run was taken away from its holder is kept for inspection; a repeat
# of the holder's own complete/fail is merely refused.
LATE_END_REASONS = ("lease_expired", "released", "task_canceled", "task_blocked", "queue_removed", "run_canceled")


async def get(u: Unit, run_id: str) -> Run:
    run = await store.run_get(u.conn, u.workspace_id, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


async def list_for_task(
    u: Unit, task_id: str, *, status: str | None = None, session_id: str | None = None
) -> list[Run]:
    """A task's runs, oldest first; optionally only those in ``status`` or attached to ``session_id``."""
    task = await task_store.task_get(u.conn, u.workspace_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    found = await store.run_list_for_task(u.conn, task.id)
    return [
        r
        for r in found
        if (status is None or r.status == status) and (session_id is None or r.session_id == session_id)
    ]


async def active_for_tasks(u: Unit, task_ids: list[str]) -> dict[str, Run]:
    """The active run (queued, claimed, starting or running) of each of ``task_ids`` that has one."""
    return await store.run_active_for_tasks(u.conn, u.workspace_id, task_ids)


async def claim(
    u: Unit, queue_name: str, worker: Actor, limit: int, lease_seconds: int | None, *, start: bool = False
) -> list[Claim]:
    """Claim up to ``limit`` runs; each is handed to exactly one claimer, with a token only it holds.
    ``start``: the runs go straight to running, as a ``start`` right after would leave them (a worker that
    begins its handlers as the claims arrive saves that call, and the run's second write)."""
    u.principal.require("runs.work")
    queue = await queues.get(u, queue_name, cached=True)
    return await _claim(u, queue, _claim_spec(u, queue, worker, limit, lease_seconds, start))


async def _claim(u: Unit, queue: Queue, spec: held_store.ClaimSpec, ahead: SentRead | None = None) -> list[Claim]:
    """The claim ``spec`` asks for; ``ahead``: of the runs read for it already (SQLite, ``claim_read``)."""
    if ahead is None:
        claimed, moved = await held_store.claim(u.conn, spec, u.numbered_events())
        written = moved is not None
    else:
        claimed, moved = await held_store.claim_read(u.conn, spec, ahead)
        written = False
    if len(claimed) < spec.limit:
        u.seen_empty(queue.id)
    return await _hand_over(
        u, queue, claimed, spec.token_prefix, spec.claimer, spec.lease_until, moved, written=written, start=spec.start
    )


def _lease_until(u: Unit, queue: Queue, lease_seconds: int | None) -> datetime:
    """A claim's lease: as long as the claimer asked for, else the queue's."""
    return u.now + timedelta(seconds=lease_seconds or queue.lease_seconds)


def _claimed(
    u: Unit, run: Run, worker: Actor, token_hash: str, lease_until: datetime, key: str | None, start: bool
) -> Run:
    """``run`` as a claim by ``worker`` leaves it (the rows say the same: ``store.run_mark_claimed``); ``key``:
    the claim's idempotency key, if it came with one; ``start``: a claim that starts the run."""
    marks = _claim_marks(u, run.status, start)
    return changed(
        run,
        status=marks.status,
        started_at=marks.started_at or run.started_at,
        claim_token_hash=token_hash,
        claimed_at=u.now,
        heartbeat_at=u.now,
        lease_until=lease_until,
        claimed_by=worker,
        idempotency_key=key or run.idempotency_key,
    )


def _claim_spec(
    u: Unit, queue: Queue, worker: Actor, limit: int, lease_seconds: int | None, start: bool = False
) -> held_store.ClaimSpec:
    lease_until = _lease_until(u, queue, lease_seconds)
    return held_store.ClaimSpec(
        workspace_id=u.workspace_id,
        queue_id=queue.id,
        queue_name=queue.name,
        now=u.now,
        limit=limit,
        token_prefix=_token_prefix(),
        lease_until=lease_until,
        claimer=worker,
        idempotency_key=u.idempotency_key,
        task_status=task_states.apply("ready", "claim"),
        task_events=_claim_events(start),
        origin=u.principal.origin,
        run_event="run.claimed",
        run_payload=_claimed_payload(lease_until),
        task_event="task.in_progress",
        task_payload=_in_progress_payload(),
        marks=_claim_marks(u, "queued", start),
    )


def _claim_marks(u: Unit, status: RunStatus, start: bool) -> store.ClaimMarks:
    """The state a claim leaves a run of ``status`` in: claimed, or for a claim that starts it, running
    since now (the state machine's ``claim`` then ``start``)."""
    claimed = run_states.apply(status, "claim")
    return store.ClaimMarks(run_states.apply(claimed, "start"), u.now) if start else store.ClaimMarks(claimed)


def _claim_events(start: bool) -> int:
    """How many events a claim records on a ready task it moves: run.claimed, task.in_progress, and for a
    claim that starts, run.started."""
    return 3 if start else 2


def _claimed_payload(lease_until: datetime, attempt: int | None = None) -> dict[str, Any]:
    """A run.claimed event's payload; without ``attempt``, what the claiming statement adds it to."""
    payload: dict[str, Any] = {"from_status": "queued", "status": "claimed", "lease_until": lease_until.isoformat()}
    return payload if attempt is None else {**payload, "attempt": attempt}


def _in_progress_payload() -> dict[str, Any]:
    """The task.in_progress event's payload of a ready task a claim moves."""
    return {"from_status": "ready", "status": task_states.apply("ready", "claim")}


def _started_payload(attempt: int, from_status: RunStatus = "claimed") -> dict[str, Any]:
    """A run.started event's payload."""
    return {"from_status": from_status, "status": run_states.apply(from_status, "start"), "attempt": attempt}


def _token_prefix() -> str:
    """Claim tokens are this plus the run's id: one secret per claim call, a distinct token per run. The runs
    of one call go to one claimer, so that they share the secret gives nobody anything they did not hold;
    the database can then write every run's token hash in the claiming statement itself."""
    return new_secret("clm") + "."


async def hand_off(u: Unit, task: Task, run: Run, queue: Queue) -> tuple[Run, Claim] | None:
    """Claim ``run``, queued by this unit for its new ``task`` and not written yet, for a claimer waiting on
    its queue (``Handoffs``): the run is then written claimed (or running, for a claimer that starts its
    runs) and the task in progress, with the events a claim records, numbered after the task's events so
    far (``task.event_sequence``, which this advances). None when no claimer waits for it."""
    offer = await u.handoffs.take(u, queue.name) if u.handoffs is not None else None
    if offer is None:
        return None
    lease_until = _lease_until(u, queue, offer.lease_seconds)
    token = _token_prefix() + run.id
    key = offer.keyed.idempotency.key if offer.keyed is not None else None  # the claimer's key, not the creating call's
    claimed = _claimed(u, run, offer.worker, hash_secret(token), lease_until, key, offer.start)
    task.status = task_states.apply(task.status, "claim")
    recorded = [
        ("run.claimed", _claimed_payload(lease_until, run.attempt)),
        ("task.in_progress", _in_progress_payload()),
    ]
    if offer.start:
        recorded.append(("run.started", _started_payload(run.attempt)))
    for kind, payload in recorded:
        task.event_sequence += 1
        await record(
            u, kind, task_id=task.id, run_id=run.id, payload=payload, actor=offer.worker,
            origin=offer.principal.origin, task_sequence=task.event_sequence,
        )  # fmt: skip
    claim = Claim(task=task, run=claimed, claim_token=token, lease_until=lease_until)
    u.offers[offer].append(claim)
    return claimed, claim


async def claim_run(u: Unit, run_id: str, worker: Actor, lease_seconds: int | None, *, start: bool = False) -> Claim:
    """Claim one particular queued run (409 if it is not queued, or still waiting out a retry backoff)."""
    u.principal.require("runs.work")
    run = await store.run_get(u.conn, u.workspace_id, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    run_states.apply(run.status, "claim")
    if run.available_at > u.now:
        raise Conflict(
            f"run {run.id} is waiting out a retry backoff until {run.available_at.isoformat()}; claim it then",
            run_id=run.id,
        )
    queue = await queue_store.queue_get(u.conn, u.workspace_id, run.queue_id)
    assert queue is not None
    return (await _take(u, queue, [run], worker, lease_seconds, start))[0]


async def claim_next(
    u: Unit,
    worker: Actor,
    *,
    queues: list[str] | None = None,
    lease_seconds: int | None = None,
    start: bool = False,
) -> Claim | None:
    """The best claimable run of the workspace (of the named queues, if given): highest priority, then
    the one claimable longest, whatever its queue. None if there is none; a queue name that does not
    exist simply has nothing to claim."""
    u.principal.require("runs.work")
    queue_ids: list[str] | None = None
    if queues is not None:
        queue_ids = list((await queue_store.queue_ids_by_name(u.conn, u.workspace_id, queues)).values())
        if not queue_ids:
            return None
    run = await store.run_claim_next_candidate(u.conn, workspace_id=u.workspace_id, queue_ids=queue_ids, now=u.now)
    if run is None:
        return None
    queue = await queue_store.queue_get(u.conn, u.workspace_id, run.queue_id)
    assert queue is not None
    return (await _take(u, queue, [run], worker, lease_seconds, start))[0]


async def _take(
    u: Unit, queue: Queue, candidates: list[Run], worker: Actor, lease_seconds: int | None, start: bool
) -> list[Claim]:
    """Hand locked queued runs of one queue to ``worker``: lease, token, events, tasks in progress (and the
    runs running, for a claim that starts them)."""
    if not candidates:
        return []
    lease_until = _lease_until(u, queue, lease_seconds)
    prefix = _token_prefix()
    hashes = {run.id: hash_secret(prefix + run.id) for run in candidates}
    await store.run_mark_claimed(
        u.conn,
        [
            {
                "run_id": run.id,
                "token_hash": hashes[run.id],
                "now": u.now,
                "lease": lease_until,
                "kind": worker.kind,
                "ref": worker.ref,
                "idempotency_key": u.idempotency_key,
                **_claim_marks(u, run.status, start).params(),
            }
            for run in candidates
        ],
    )
    claimed = [_claimed(u, run, worker, hashes[run.id], lease_until, u.idempotency_key, start) for run in candidates]
    return await _hand_over(u, queue, claimed, prefix, worker, lease_until, start=start)


async def _hand_over(
    u: Unit,
    queue: Queue,
    claimed: list[Run],
    prefix: str,
    worker: Actor,
    lease_until: datetime,
    moved: dict[str, Task] | None = None,
    *,
    written: bool = False,
    start: bool = False,
) -> list[Claim]:
    """The rest of a claim, once its runs are marked claimed (tokens ``prefix + run id``; ``start``: and
    running): their tasks in progress, the events. ``moved``: the ready tasks the claiming statement moved
    to in progress already (reserving ``_claim_events(start)`` numbers on each); ``written``: and it wrote
    their run.claimed and task.in_progress events too (PostgreSQL)."""
    if not claimed:
        return []
    claims = []
    events = _claim_events(start)
    # Ready tasks (all of them, but for a retry whose timer has not fired) move to in_progress in one
    # statement that also numbers their events (run.claimed, task.in_progress, and run.started).
    target = task_states.apply("ready", "claim")
    if moved is None:
        moved = await task_store.task_claim_ready(
            u.conn,
            u.workspace_id,
            [run.task_id for run in claimed],
            status=target,
            queue_name=queue.name,
            now=u.now,
            events=events,
        )
    others = [run.task_id for run in claimed if run.task_id not in moved]
    tasks = {t.id: t for t in await task_store.task_get_many(u.conn, u.workspace_id, others)} if others else {}
    for run in claimed:
        task = moved.get(run.task_id) or tasks[run.task_id]
        numbered = run.task_id in moved
        first = task.event_sequence - events + 1 if numbered else None
        if numbered and written:
            u.wake(events_key(u.workspace_id))
        else:
            await record(
                u,
                "run.claimed",
                task_id=run.task_id,
                run_id=run.id,
                actor=worker,
                payload=_claimed_payload(lease_until, run.attempt),
                task_sequence=first,
            )
        if numbered and not written:
            await record(
                u,
                "task.in_progress",
                task_id=task.id,
                run_id=run.id,
                actor=worker,
                payload=_in_progress_payload(),
                task_sequence=task.event_sequence - events + 2,
            )
        elif not numbered and task.status == "scheduled":
            await timer_store.timer_delete_for_task(u.conn, task.id, "retry")
            task = await move_task(u, task, "fire", event="task.ready", actor=worker)
            task = await move_task(u, task, "claim", event="task.in_progress", run_id=run.id, actor=worker)
        if start:
            assert run.status == "running", "a claim that starts writes its runs running"
            await record(
                u,
                "run.started",
                task_id=run.task_id,
                run_id=run.id,
                actor=worker,
                payload=_started_payload(run.attempt),
                task_sequence=task.event_sequence if numbered else None,
            )
        held = changed(run, queue=queue.name)
        claims.append(Claim(task=task, run=held, claim_token=prefix + run.id, lease_until=lease_until))
    return claims


async def _held(
    u: Unit,
    run_id: str,
    token: str | None,
    *,
    late: dict[str, Any] | None = None,
    prefetched: tuple[Run | None, dict[str, Task]] | None = None,
) -> tuple[Run, Task] | None:
    """The run and its task, if the caller holds the run and the lease has not run out.

    With a ``token``, holding means the token is the run's current claim; a wrong token is refused at
    once. Without one (the AGH agent endpoints identify the agent by its key), an agent key must be
    the run's claimer (else ``NotHolder``), and a person's key acts as an operator on any held run.
    A caller that did hold the run but no longer does (lease expired, released, canceled) is refused
    *after commit*: a lapsed lease is expired here and now, and a late result (``late``) is kept as a
    ``run.late_result`` event. Returns None when a refusal is pending. ``prefetched``: the run and the
    tasks, read and locked already by a batch.
    """
    task: Task | None = None
    if prefetched is not None:
        run = prefetched[0]
    else:
        pair = await held_store.run_with_task(u.conn, u.workspace_id, run_id)
        run, task = pair if pair is not None else (None, None)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if token is not None:
        if not matches(token, run.claim_token_hash):
            raise StaleClaim(
                "this claim token does not hold the run; claim the task again", run_id=run.id, run_status=run.status
            )
    else:
        if run.status == "queued":
            raise InvalidTransition(
                f"run {run.id} is queued: nobody holds it yet; claim it first", status=run.status, run_id=run.id
            )
        _check_holder(u, run)
    if task is None and prefetched is not None and run.task_id in prefetched[1]:
        task = prefetched[1][run.task_id]
    if task is None:
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


def _check_holder(u: Unit, run: Run) -> None:
    """An agent acting without a token may act only on runs it claimed itself."""
    if u.principal.role == "agent" and run.claimed_by != u.principal.actor:
        holder = f"{run.claimed_by.kind}:{run.claimed_by.ref}" if run.claimed_by else "nobody"
        raise NotHolder(
            f"run {run.id} is held by {holder}, not by {u.principal.actor.kind}:{u.principal.actor.ref}",
            run_id=run.id,
        )


async def start(u: Unit, run_id: str, token: str | None) -> Run:
    u.principal.require("runs.work")
    held = await _held(u, run_id, token)
    if held is None:
        return await get(u, run_id)
    run = held[0]
    if run.status == "running":
        return run
    return await move_run(u, run, "start", started_at=u.now)


async def heartbeat(
    u: Unit,
    run_id: str,
    token: str | None,
    extend_seconds: int | None,
    progress: Any = None,
    usage: dict[str, Any] | None = None,
) -> Run:
    """Extend the lease. Not an event: heartbeats are frequent and change no state anyone waits on.
    ``usage`` merges into the run's usage (see ``domain.usage``)."""
    u.principal.require("runs.work")
    # The common case, a holder within its lease, needs only the run row (not its task) and one update.
    found = await store.run_get(u.conn, u.workspace_id, run_id, lock=True)
    run = found if _holding(u, found, token) else None
    if run is None:
        held = await _held(u, run_id, token)  # every other case, with its refusals
        if held is None:
            return await get(u, run_id)
        run = held[0]
    values = _beat(u, run, extend_seconds, progress, usage)
    await store.run_update(u.conn, run.id, values, expected_status=run.status)
    if progress is not None:
        await record(u, "run.progress", task_id=run.task_id, run_id=run.id, payload={"progress": progress})
    return changed(run, **values)


def _holding(u: Unit, run: Run | None, token: str | None) -> bool:
    """Whether ``token`` holds ``run`` within its lease, decided on the run row alone (no task read): the
    common case of a heartbeat, and of each item of a batch start or heartbeat (``_each_held``)."""
    return (
        run is not None
        and token is not None
        and run_states.is_held(run.status)
        and run.lease_until is not None
        and run.lease_until > u.now
        and matches(token, run.claim_token_hash)
    )


def _beat(u: Unit, run: Run, extend_seconds: int | None, progress: Any, usage: dict[str, Any] | None) -> dict[str, Any]:
    """What a heartbeat writes on a held run. By default it renews the lease for as long as it was last
    granted."""
    granted = (run.lease_until - run.heartbeat_at).total_seconds() if run.lease_until and run.heartbeat_at else 0
    seconds = extend_seconds or max(granted, 1)
    values: dict[str, Any] = {"heartbeat_at": u.now, "lease_until": u.now + timedelta(seconds=seconds)}
    if progress is not None:
        values["progress"] = progress
    if usage is not None:
        values["usage"] = usage_rules.merge(run.usage, usage)
    return values


MAX_BATCH = 1000
Item = TypeVar("Item")


class BatchOfRuns(Generic[Item]):
    """A call on many held runs, each item on its own (its outcome: the run, or its refusal), that can be
    taken together with others of its kind: their items run as one batch (``each``). A kind says how its
    items are done (``_each``)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    @staticmethod
    async def _each(u: Unit, items: list[Item]) -> list[Run | WorkloomError]:
        raise NotImplementedError

    async def __call__(self, u: Unit) -> list[Run | WorkloomError]:
        u.principal.require("runs.work")
        if len(self.items) > MAX_BATCH:
            raise _too_many()
        return await self._each(u, self.items)

    @classmethod
    async def each(cls, u: Unit, calls: list[Self]) -> list[list[Run | WorkloomError] | WorkloomError]:
        """What each call would have had alone: its items' outcomes, or its refusal (too many items)."""
        u.principal.require("runs.work")
        return await _batches_as_one([call.items for call in calls], lambda items: cls._each(u, items))


@dataclass(frozen=True, slots=True)
class Beat:
    """One item of a batch heartbeat: the run, the holder's token, and what ``heartbeat`` takes besides."""

    run_id: str
    token: str
    extend_seconds: int | None = None
    progress: Any = None
    usage: dict[str, Any] | None = None


class HeartbeatMany(BatchOfRuns[Beat]):
    """``heartbeat_many`` as a batch call: a worker's leases renewed together, several workers' at once."""

    @staticmethod
    async def _each(u: Unit, items: list[Beat]) -> list[Run | WorkloomError]:
        return await _beat_each(u, items)


async def heartbeat_many(u: Unit, beats: list[Beat]) -> list[Run | WorkloomError]:
    """Heartbeat many held runs, each on its own as ``heartbeat`` would: a run whose token no longer holds
    it is refused (a lapsed lease expired) while the others' leases are renewed. One unit of work: the runs
    read and locked in one statement and renewed in one (those that bring progress or usage in a second,
    sent with it). A run sent twice is renewed by its first item; the second is given the same answer. Per
    item, the run or its refusal."""
    return await HeartbeatMany(beats)(u)


async def _beat_each(u: Unit, beats: list[Beat]) -> list[Run | WorkloomError]:
    renewed: list[dict[str, Any]] = []  # beats that only move the lease, written together
    reported: list[dict[str, Any]] = []  # beats that bring progress or usage too, written together

    async def renew(i: int, run: Run) -> Run:
        beat = beats[i]
        values = _beat(u, run, beat.extend_seconds, beat.progress, beat.usage)
        if beat.progress is None and beat.usage is None:
            renewed.append({"run_id": run.id, **values})
        else:
            reported.append({"run_id": run.id, "progress": run.progress, "usage": run.usage, **values})
            if beat.progress is not None:
                payload = {"progress": beat.progress}
                await record(u, "run.progress", task_id=run.task_id, run_id=run.id, payload=payload)
        return changed(run, **values)

    outcomes = await _each_held(u, [(b.run_id, b.token) for b in beats], renew)
    u.write_later(
        [
            store.run_renew_writes(rows, reports=reports)
            for rows, reports in ((renewed, False), (reported, True))
            if rows
        ]
    )
    return outcomes


async def _each_held(
    u: Unit, items: list[tuple[str, str]], act: Callable[[int, Run], Awaitable[Run]]
) -> list[Run | WorkloomError]:
    """A batch's (run id, token) items, each as its single call would take it, in run id order (the order
    the runs are locked in, in one statement): a run the token holds within its lease goes to ``act`` (the
    item's index, the run → its outcome); any other is refused — a lapsed lease expired, its task requeued,
    and refused after the commit like the others. A run sent twice is acted on once, both items given the
    outcome. Per item, the outcome or the refusal."""
    found = await store.run_get_many(u.conn, u.workspace_id, sorted({run_id for run_id, _ in items}), lock=True)
    outcomes: dict[int, Run | WorkloomError] = {}
    decided: dict[str, Run | WorkloomError] = {}  # by run id: what its first item holding the token had
    for i in sorted(range(len(items)), key=lambda i: items[i][0]):
        run_id, token = items[i]
        run = found.get(run_id)
        if run_id in decided and run is not None and matches(token, run.claim_token_hash):
            outcomes[i] = decided[run_id]
            continue
        if not _holding(u, run, token):
            try:
                held = await _held(u, run_id, token, prefetched=(run, {}))
            except WorkloomError as refused:  # raised before anything of this run was written
                outcomes[i] = refused
                continue
            if held is None:
                assert u.deferred_error is not None
                outcomes[i] = decided[run_id] = u.deferred_error
                u.deferred_error = None
                continue
            run = held[0]
        assert run is not None
        outcomes[i] = decided[run_id] = await act(i, run)
    return [outcomes[i] for i in range(len(items))]


async def complete(u: Unit, run_id: str, token: str | None, result: Any, usage: dict[str, Any] | None = None) -> Run:
    u.principal.require("runs.work")
    held = await _held(u, run_id, token, late={"action": "complete", "result": result})
    if held is None:
        return await get(u, run_id)
    run, task = held
    ((_, completed),) = await _complete_all(u, [(0, run, task, result, usage)])
    return completed


async def complete_and_claim(
    u: Unit,
    run_id: str,
    token: str,
    result: Any,
    usage: dict[str, Any] | None,
    limit: int,
    lease_seconds: int | None,
    start: bool = False,
) -> tuple[Run, list[Claim]]:
    """Complete a held run and, in the same transaction, claim up to ``limit`` more runs of its queue for
    the worker that held it (``start``: and start them, as ``claim``): a worker's loop costs one request
    and one commit per task instead of two.
    Nothing is claimed when the completion is refused, or when what is claimable now is nothing (the
    worker then long-polls with an ordinary claim)."""
    u.principal.require("runs.work")
    held = await _held(u, run_id, token, late={"action": "complete", "result": result})
    if held is None:
        return await get(u, run_id), []
    run, task = held
    if run.claimed_by is None or run.queue is None or limit != 1:
        ((_, completed),) = await _complete_all(u, [(0, run, task, result, usage)])
        if completed.claimed_by is None or completed.queue is None:
            return completed, []
        return completed, await claim(u, completed.queue, completed.claimed_by, limit, lease_seconds, start=start)
    # A worker's loop: the completion and the next claim go as one statement.
    completion = await _completion(u, [(0, run, task, result, usage)])
    ((_, completed),) = completion.done
    worker = run.claimed_by
    queue = await queues.get(u, run.queue, cached=True)
    spec = _claim_spec(u, queue, worker, 1, lease_seconds, start)
    waiting, claimed, moved = await held_store.complete_and_claim_one(
        u.conn, completion.run_rows[0], completion.task_rows[0], spec, u.numbered_events()
    )
    await _release_dependents(u, completion.tasks, waiting)
    if not claimed and not waiting:
        u.seen_empty(queue.id)
    claims = await _hand_over(
        u, queue, claimed, spec.token_prefix, worker, spec.lease_until, moved, written=moved is not None, start=start
    )
    if not claims and waiting:  # a dependent released by this completion may be the next in line
        claims = await claim(u, queue.name, worker, limit, lease_seconds, start=start)
    return completed, claims


async def complete_many_and_claim(
    u: Unit,
    items: list[tuple[str, str, Any]],
    queue_name: str,
    worker: Actor,
    limit: int,
    lease_seconds: int | None,
    start: bool = False,
) -> tuple[list[Run | WorkloomError], list[Claim]]:
    """``complete_many``, then claim up to ``limit`` runs of ``queue_name`` for ``worker`` (``start``: and
    start them, as ``claim``), in one transaction.

    On SQLite the claim's runs are read first, sent ahead of the completions' read, and claimed while SQLite
    writes the completions: its thread works while this one builds what it writes next (the completions
    built while it reads, the claim while it writes them), where it was idle between statements. Unless
    the completions made some run of the queue claimable (a dependent released, a lapsed lease requeued:
    they wake its claimers), the runs read first are the ones the claim would take after them."""
    u.principal.require("runs.work")
    queue = await queues.get(u, queue_name, cached=True)
    spec = _claim_spec(u, queue, worker, limit, lease_seconds, start)
    ahead = held_store.claim_candidates_soon(u.conn, spec)
    outcomes = await complete_many(u, items)
    if ahead is not None and queue_key(queue.id) in u.wakeups:
        await ahead.rows()  # read for nothing: the claim reads again, after the completions
        ahead = None
    return outcomes, await _claim(u, queue, spec, ahead)


@dataclass(frozen=True, slots=True)
class Completion:
    """A holder's completion of one run; ``claim_next``: then up to that many more runs of its queue for
    the worker that held it (as ``complete_and_claim``)."""

    run_id: str
    token: str
    result: Any = None
    usage: dict[str, Any] | None = None
    claim_next: int = 0
    lease_seconds: int | None = None
    start: bool = False  # the runs claimed next start at once (as ``claim``'s)
    # The idempotency key its claims record when it is taken together with calls under other keys
    # (``Keyed.each``); alone, the unit's.
    key: str | None = None

    def keyed(self, key: str) -> Completion:
        return replace(self, key=key)

    async def __call__(self, u: Unit) -> tuple[Run, list[Claim]]:
        if self.claim_next == 0:
            return await complete(u, self.run_id, self.token, self.result, self.usage), []
        return await complete_and_claim(
            u, self.run_id, self.token, self.result, self.usage, self.claim_next, self.lease_seconds, self.start
        )

    @staticmethod
    async def each(u: Unit, items: list[Completion]) -> list[tuple[Run, list[Claim]] | WorkloomError]:
        """Many completions in one unit, each with what it would have had alone (its run and claims, or its
        refusal): runs and tasks read in one statement and written in one, the next runs claimed for their
        workers in one per queue. Used when completions arrive together (``SharedCommits``)."""
        u.principal.require("runs.work")
        done = await _complete_each(u, [(c.run_id, c.token, c.result, c.usage) for c in items])
        claims: dict[int, list[Claim]] = {}
        wanting: dict[tuple[str, int | None, bool], list[tuple[int, Actor, str | None]]] = {}
        for i, (item, run) in enumerate(zip(items, done, strict=True)):
            if isinstance(run, Run) and item.claim_next > 0 and run.claimed_by is not None and run.queue is not None:
                if item.claim_next == 1:
                    wanted = (run.queue, item.lease_seconds, item.start)
                    wanting.setdefault(wanted, []).append((i, run.claimed_by, item.key))
                    continue
                unit_key, u.idempotency_key = u.idempotency_key, item.key or u.idempotency_key
                try:
                    claims[i] = await claim(
                        u, run.queue, run.claimed_by, item.claim_next, item.lease_seconds, start=item.start
                    )
                finally:
                    u.idempotency_key = unit_key
        for (queue_name, lease_seconds, start), workers in wanting.items():
            found = await _claim_each(u, queue_name, [(w, key) for _, w, key in workers], lease_seconds, start)
            for (i, _, _), got in zip(workers, found, strict=True):
                claims[i] = got
        return [run if isinstance(run, WorkloomError) else (run, claims.get(i, [])) for i, run in enumerate(done)]


async def _claim_each(
    u: Unit, queue_name: str, workers: list[tuple[Actor, str | None]], lease_seconds: int | None, start: bool
) -> list[list[Claim]]:
    """One run of the queue for each of ``workers`` (in order, while there are runs), in one statement on
    PostgreSQL; each with a token of its own (one claim call's runs share one secret, and these go to
    several holders), recording the idempotency key of its worker's call (or the unit's)."""
    queue = await queues.get(u, queue_name, cached=True)
    spec = _claim_spec(u, queue, workers[0][0], len(workers), lease_seconds, start)
    claimers = [(worker, _token_prefix(), key or u.idempotency_key) for worker, key in workers]
    claimed, moved = await held_store.claim_each(u.conn, spec, claimers, u.numbered_events())
    if len(claimed) < len(claimers):
        u.seen_empty(queue.id)
    written = moved is not None
    if moved is None and claimed:
        moved = await task_store.task_claim_ready(
            u.conn,
            u.workspace_id,
            [run.task_id for run in claimed],
            status=spec.task_status,
            queue_name=queue.name,
            now=u.now,
            events=spec.task_events,
        )
    out: list[list[Claim]] = []
    for k, (worker, prefix, _) in enumerate(claimers):
        if k >= len(claimed):
            out.append([])
            continue
        run = claimed[k]
        if run.claimed_by != worker or not matches(prefix + run.id, run.claim_token_hash):
            raise AssertionError("a run claimed for several workers did not come back in claim order")
        handed = await _hand_over(
            u, queue, [run], prefix, worker, spec.lease_until, moved, written=written, start=start
        )
        out.append(handed)
    return out


_Completing = tuple[str, str | None, Any, dict[str, Any] | None]  # run id, token, result, usage
Held = tuple[int, Run, Task, Any, dict[str, Any] | None]  # index in the request, run, task, result, usage


class CompleteMany(BatchOfRuns[tuple[str, str, Any]]):
    """``complete_many`` as a batch call (a worker's batched completions, several workers' at once). A run
    completed by an earlier call of the batch is refused to the later one, as it would be after the first
    had committed."""

    @staticmethod
    async def _each(u: Unit, items: list[tuple[str, str, Any]]) -> list[Run | WorkloomError]:
        return await _complete_each(u, [(run_id, token, result, None) for run_id, token, result in items])


class StartMany(BatchOfRuns[tuple[str, str]]):
    """``start_many`` as a batch call: a worker's runs started as they are handed to their handlers."""

    @staticmethod
    async def _each(u: Unit, items: list[tuple[str, str]]) -> list[Run | WorkloomError]:
        return await _start_each(u, items)


async def _batches_as_one(
    batches: list[list[Item]], run: Callable[[list[Item]], Awaitable[list[Run | WorkloomError]]]
) -> list[list[Run | WorkloomError] | WorkloomError]:
    """Several calls' batches run as one (``run`` of all their items, in order), each call given back the
    outcomes of its own items, or its refusal when it has more items than a batch may hold."""
    outcomes: list[list[Run | WorkloomError] | WorkloomError] = []
    taken: list[Item] = []
    spans: list[tuple[int, int]] = []
    for items in batches:
        if len(items) > MAX_BATCH:
            outcomes.append(_too_many())
            spans.append((0, -1))
            continue
        outcomes.append([])
        spans.append((len(taken), len(taken) + len(items)))
        taken.extend(items)
    done = await run(taken) if taken else []
    for i, (start, end) in enumerate(spans):
        if end >= 0:
            outcomes[i] = done[start:end]
    return outcomes


def _too_many() -> ValidationFailed:
    return ValidationFailed(f"at most {MAX_BATCH} runs per batch", [FieldError("runs", f"at most {MAX_BATCH} items")])


async def complete_many(u: Unit, items: list[tuple[str, str, Any]]) -> list[Run | WorkloomError]:
    """Complete many held runs, each on its own: a run whose token no longer holds it is refused (and a
    late result kept, as for one run) while the others complete. One unit of work; runs and tasks read
    and locked in one statement for the batch, in run id order. Returns, per item, the run or its refusal."""
    return await CompleteMany(items)(u)


async def start_many(u: Unit, items: list[tuple[str, str]]) -> list[Run | WorkloomError]:
    """Start many held runs (mark them running), each on its own as ``start`` would: a run already running
    is given back as it is, one whose token no longer holds it is refused while the others start. One
    unit of work: the runs read and locked in one statement, moved in one, their events with the commit.
    Returns, per item, the run or its refusal."""
    return await StartMany(items)(u)


async def _start_each(u: Unit, items: list[tuple[str, str]]) -> list[Run | WorkloomError]:
    moved: list[dict[str, Any]] = []

    async def start_one(_: int, run: Run) -> Run:
        if run.status == "running":
            return run
        target = run_states.apply(run.status, "start")
        moved.append({"run_id": run.id, "status": target, "started_at": u.now})
        payload = _started_payload(run.attempt, run.status)
        await record(u, "run.started", task_id=run.task_id, run_id=run.id, payload=payload)
        return changed(run, status=target, started_at=u.now)

    outcomes = await _each_held(u, items, start_one)
    u.write_later([store.run_start_writes(moved)] if moved else [])
    return outcomes


async def _complete_each(u: Unit, items: list[_Completing]) -> list[Run | WorkloomError]:
    """``complete_many`` of (run id, token, result, usage) items."""
    pairs = await held_store.runs_with_tasks(u.conn, u.workspace_id, [item[0] for item in items])
    tasks = {task.id: task for _, task in pairs.values()}
    outcomes: dict[int, Run | WorkloomError] = {}
    held: list[Held] = []
    seen: set[str] = set()
    for i in sorted(range(len(items)), key=lambda i: items[i][0]):
        run_id, token, result, usage = items[i]
        if run_id in seen:  # the same run twice: the first item takes it, the repeat is refused as a repeat
            outcomes[i] = StaleClaim(
                "this run is completed by an earlier item of the same batch", run_id=run_id, run_status="completed"
            )
            continue
        seen.add(run_id)
        pair = pairs.get(run_id)
        try:
            found_held = await _held(
                u,
                run_id,
                token,
                late={"action": "complete", "result": result},
                prefetched=(pair[0] if pair else None, tasks),
            )
        except WorkloomError as refused:  # raised before anything of this run was written
            outcomes[i] = refused
            continue
        if found_held is None:
            assert u.deferred_error is not None
            outcomes[i], u.deferred_error = u.deferred_error, None
            continue
        try:  # a transition the single call would refuse is refused for this item alone
            run_states.apply(found_held[0].status, "complete")
            task_states.apply(found_held[1].status, "complete")
        except WorkloomError as refused:
            outcomes[i] = refused
            continue
        held.append((i, *found_held, result, usage))
    for i, run in await _complete_all(u, held):
        outcomes[i] = run
    return [outcomes[i] for i in range(len(items))]


async def _complete_all(u: Unit, held: list[Held]) -> list[tuple[int, Run]]:
    """Complete held runs (locked, with their tasks, by the caller): one statement for the runs and one
    for the tasks, whatever their number. The rows are locked in this transaction, so the status each
    update expects is the one read, and each task's two events (run.completed, task.completed) take the
    next two numbers of its sequence, reserved by the same update."""
    if not held:
        return []
    completion = await _completion(u, held)
    waiting = await held_store.complete(u.conn, completion.run_rows, completion.task_rows)
    await _release_dependents(u, completion.tasks, waiting)
    return completion.done


@dataclass
class _Completion:
    """What completing held runs writes (the rows), and what it made of them."""

    run_rows: list[dict[str, Any]]
    task_rows: list[dict[str, Any]]
    done: list[tuple[int, Run]]  # index in the request, completed run
    tasks: list[Task]  # the completed tasks


async def _completion(u: Unit, held: list[Held]) -> _Completion:
    """The rows completing ``held`` writes, its events recorded; nothing written yet."""
    run_target = run_states.apply("running", "complete")
    run_rows, task_rows, done, completed_tasks = [], [], [], []
    for i, run, task, result, usage in held:
        run_states.apply(run.status, "complete")
        task_target = task_states.apply(task.status, "complete")
        run_values = {
            "result": result,
            "end_reason": "completed",
            "status": run_target,
            "ended_at": u.now,
            "usage": usage_rules.merge(run.usage, usage) if usage is not None else run.usage,
        }
        run_rows.append({"run_id": run.id, **run_values})
        await record(
            u,
            "run.completed",
            task_id=run.task_id,
            run_id=run.id,
            payload={"from_status": run.status, "status": run_target, "attempt": run.attempt},
            task_sequence=task.event_sequence + 1,
        )
        u.tally("completions")
        task_values = {
            "output": result,
            "attempts": task.attempts + 1,
            "status": task_target,
            "updated_at": u.now,
            "last_activity_at": u.now,
            "blocked_reason": None,
            "closed_at": u.now,
        }
        task_rows.append({"task_id": task.id, "events": 2, **task_values})
        await record(
            u,
            "task.completed",
            task_id=task.id,
            run_id=run.id,
            payload={"from_status": task.status, "status": task_target},
            task_sequence=task.event_sequence + 2,
        )
        done.append((i, changed(run, **run_values)))
        completed_tasks.append(changed(task, **task_values, event_sequence=task.event_sequence + 2))
    return _Completion(run_rows, task_rows, done, completed_tasks)


async def _release_dependents(u: Unit, completed: list[Task], waiting: set[str]) -> None:
    for task in completed:
        if task.id in waiting:
            await release_dependents(u, task)


async def fail(u: Unit, run_id: str, token: str | None, error: str, retryable: bool = True) -> Run:
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
    u.tally("failures")
    await _after_failure(u, task, run, error, retryable)
    return run


async def _after_failure(u: Unit, task: Task, run: Run, error: str, retryable: bool) -> None:
    """Queue the next attempt after the queue's backoff, or fail the task when attempts are spent."""
    queue = await task_queue(u, task)
    attempts = task.attempts + 1
    max_attempts = task.max_attempts or (queue.max_attempts if queue else 1)
    if retryable and queue is not None and attempts < max_attempts:
        await task_store.task_update(u.conn, task.id, {"attempts": attempts})
        task = changed(task, attempts=attempts)
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
    u.tally("lease_expiries")
    await _after_failure(u, task, run, "lease_expired", retryable=True)
    return run


async def release(u: Unit, run_id: str, token: str | None, reason: str | None) -> Run:
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


async def attach_session(u: Unit, run_id: str, session_id: str, token: str | None = None) -> Run:
    """Attach an agent session to a held run. A claimed run moves to ``starting``; a starting or running
    one just takes the (new) session. Checked like every holder call (see ``_held``)."""
    u.principal.require("runs.work")
    held = await _held(u, run_id, token)
    if held is None:
        return await get(u, run_id)
    run = held[0]
    payload = {"session_id": session_id}
    if run.status == "claimed":
        return await move_run(u, run, "begin", event="run.session_attached", payload=payload, session_id=session_id)
    await store.run_update(u.conn, run.id, {"session_id": session_id}, expected_status=run.status)
    await record(
        u,
        "run.session_attached",
        task_id=run.task_id,
        run_id=run.id,
        payload={"from_status": run.status, "status": run.status, "attempt": run.attempt, **payload},
    )
    return changed(run, session_id=session_id)


async def enqueue(u: Unit, task_id: str) -> Run:
    """An explicit new run for a ready task without one (409 if it has an active run or is not ready)."""
    u.principal.require("tasks.write")
    task = await task_store.task_get(u.conn, u.workspace_id, task_id, lock=True)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    queue = await task_queue(u, task)
    if queue is None:
        raise Conflict(f"task {task.identifier} has no queue to run in; set its queue first")
    active = await store.run_active_for_task(u.conn, task.id, lock=True)
    if active is not None:
        raise Conflict(
            f"task {task.identifier} has an active run already ({active.id}, {active.status})", run_id=active.id
        )
    if task.status != "ready":
        raise InvalidTransition(
            f"task {task.identifier} is {task.status}; only a ready task can be given a run",
            status=task.status,
            action="enqueue",
        )
    return await enqueue_run(
        u, task, queue, attempt=task.attempts + 1, available_at=u.now, idempotency_key=u.idempotency_key
    )


async def cancel_run(u: Unit, run_id: str, reason: str | None = None) -> Run:
    """Cancel one run, not its task: the holder loses the lease (a late result is kept, not applied),
    and a task that was being worked on, or waiting to retry, goes back to ``ready`` without a run.
    No attempt is spent."""
    u.principal.require("tasks.write")
    run = await store.run_get(u.conn, u.workspace_id, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    task = await task_store.task_get(u.conn, u.workspace_id, run.task_id, lock=True)
    assert task is not None
    run = await move_run(u, run, "cancel", event="run.canceled", end_reason="run_canceled", payload={"reason": reason})
    if task.status in ("in_progress", "on_hold", "scheduled"):
        if task.status == "scheduled":
            await timer_store.timer_delete_for_task(u.conn, task.id, "retry")
        await move_task(u, task, "drop_run", event="task.ready", run_id=run.id, payload={"run_canceled": run.id})
    return run


async def usage_summary(u: Unit, task_id: str) -> dict[str, Any]:
    """A task's usage: every run's usage added up (see ``domain.usage.summarize``)."""
    return usage_rules.summarize(r.usage for r in await list_for_task(u, task_id))
