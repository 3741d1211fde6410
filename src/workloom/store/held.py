"""A held run together with its task: what every holder call (complete, fail, start, release…) reads and
locks, and what a completion writes.

Each pair is one round trip where it used to be two or three. On this kind of machine a round trip to
PostgreSQL costs ~0.3 ms of wall time and CPU on both sides whatever the statement does, so for a worker
completing one task per request the number of statements, not their work, sets the pace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import Actor
from workloom.domain.models import Run, Task, changed
from workloom.domain.secrets import hash_secret
from workloom.store import rows
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store.fast import (
    MANY_AS_ONE_FROM,
    SentRead,
    Statement,
    Write,
    one_of,
    read_soon,
    rows_after,
    workspace_filter,
    write_all,
    write_all_soon,
)
from workloom.store.schema import events, inline, queues, runs, task_dependencies, tasks

_TASK_PREFIX = "t_"
# The task's columns in a row that also holds its run's: (label in the row, the task's column).
_TASK_KEYS = tuple((_TASK_PREFIX + c.name, c.name) for c in tasks.c)
_TASK_KEYS_AND_QUEUE = (*_TASK_KEYS, (_TASK_PREFIX + "queue_name", "queue_name"))
_task_queue = queues.alias("task_queue")


def _read(runs_wanted: sa.ColumnElement[bool] | None = None) -> sa.Select[Any]:
    """The run ``:run_id`` (or the runs ``runs_wanted``, their workspace checked without an index) and its
    task, both locked."""
    return (
        sa.select(
            runs,
            queues.c.name.label("queue_name"),
            *(column.label(_TASK_PREFIX + column.name) for column in tasks.c),
            _task_queue.c.name.label(_TASK_PREFIX + "queue_name"),
        )
        .select_from(
            runs.join(queues, queues.c.id == runs.c.queue_id)
            .join(tasks, tasks.c.id == runs.c.task_id)
            .outerjoin(_task_queue, _task_queue.c.id == tasks.c.queue_id)
        )
        .where(
            sa.and_(runs.c.workspace_id == sa.bindparam("workspace_id"), runs.c.id == sa.bindparam("run_id"))
            if runs_wanted is None
            else sa.and_(workspace_filter(runs.c.workspace_id, "workspace_id"), runs_wanted)
        )
        # Run before task, as every other path that locks both takes them.
        .with_for_update(of=[runs, tasks])
    )


_READ = Statement(_read())


def _read_many(dialect: str) -> sa.Select[Any]:
    # In run id order, as every batch locks them.
    return _read(one_of(runs.c.id, "run_ids", dialect)).order_by(runs.c.id)


_READ_MANY = Statement(_read_many)


async def run_with_task(conn: AsyncConnection, workspace_id: str, run_id: str) -> tuple[Run, Task] | None:
    """The run and its task, both locked for the rest of the transaction; None if the run is not found."""
    row = await _READ.first(conn, {"workspace_id": workspace_id, "run_id": run_id})
    if row is None:
        return None
    return _pair(row)


async def runs_with_tasks(conn: AsyncConnection, workspace_id: str, run_ids: list[str]) -> dict[str, tuple[Run, Task]]:
    """``run_with_task`` for many runs in one statement, locked in run id order: by run id, those found."""
    found = await _READ_MANY.rows(conn, {"workspace_id": workspace_id, "run_ids": sorted(set(run_ids))})
    return {row["id"]: _pair(row) for row in found}


def _pair(row: dict[str, Any]) -> tuple[Run, Task]:
    return rows.run(row), rows.task(_task_part(row, _TASK_KEYS_AND_QUEUE))


def _task_part(row: dict[str, Any], keys: tuple[tuple[str, str], ...] = _TASK_KEYS) -> dict[str, Any]:
    return {name: row[key] for key, name in keys}


def _completion(events: str) -> tuple[sa.CTE, sa.CTE, sa.Label[bool]]:
    """One run and its task completed (two data-modifying parts), and whether some task depends on that
    task. ``events``: the name of the parameter counting the event numbers the task update reserves."""
    done_run = (
        sa.update(runs)
        .where(runs.c.id == sa.bindparam("run_id"))
        .values(
            status=sa.bindparam("run_status", type_=runs.c.status.type),
            result=sa.bindparam("result", type_=runs.c.result.type),
            end_reason=sa.bindparam("end_reason", type_=runs.c.end_reason.type),
            ended_at=sa.bindparam("ended_at", type_=runs.c.ended_at.type),
            usage=sa.bindparam("usage", type_=runs.c.usage.type),
        )
        .returning(runs.c.id)
        .cte("done_run")
    )
    done_task = (
        sa.update(tasks)
        .where(tasks.c.id == sa.bindparam("task_id"))
        .values(
            output=sa.bindparam("output", type_=tasks.c.output.type),
            attempts=sa.bindparam("attempts", type_=tasks.c.attempts.type),
            status=sa.bindparam("task_status", type_=tasks.c.status.type),
            updated_at=sa.bindparam("updated_at", type_=tasks.c.updated_at.type),
            blocked_reason=sa.bindparam("blocked_reason", type_=tasks.c.blocked_reason.type),
            closed_at=sa.bindparam("closed_at", type_=tasks.c.closed_at.type),
            last_activity_at=sa.bindparam("last_activity_at", type_=tasks.c.last_activity_at.type),
            event_sequence=tasks.c.event_sequence + sa.bindparam(events, type_=sa.Integer),
        )
        .returning(tasks.c.id)
        .cte("done_task")
    )
    waiting = sa.exists().where(task_dependencies.c.depends_on_task_id == sa.bindparam("task_id"))
    return done_run, done_task, waiting.label("has_dependents")


def _complete_one() -> sa.Select[Any]:
    """One run and its task completed, and whether some task depends on that task, in one statement.

    The dependents are read after the task's row lock was taken (by ``run_with_task``, in an earlier
    statement, hence in a later snapshot): a dependency being added waits on that lock, so none is missed."""
    done_run, done_task, waiting = _completion("done_events")
    return sa.select(waiting).add_cte(done_run, done_task)


_COMPLETE_ONE = Statement(_complete_one())


def _completion_params(run_row: dict[str, Any], task_row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in run_row.items() if k != "status"},
        **{k: v for k, v in task_row.items() if k not in ("status", "events")},
        "done_events": task_row["events"],
        "run_status": run_row["status"],
        "task_status": task_row["status"],
    }


async def complete(conn: AsyncConnection, run_rows: list[dict[str, Any]], task_rows: list[dict[str, Any]]) -> set[str]:
    """Write completed runs and their tasks (both locked by the caller; the row formats of
    ``runs.run_complete_many`` and ``tasks.task_complete_many``); the ids of those tasks some task depends on.

    One statement on PostgreSQL (for many runs: the two updates as parts of the dependents' read, which
    takes the snapshot from before them and reads no row they change); elsewhere three."""
    if len(run_rows) == 1 and len(task_rows) == 1 and conn.dialect.name == "postgresql":
        found = await _COMPLETE_ONE.first(conn, _completion_params(run_rows[0], task_rows[0]))
        return {task_rows[0]["task_id"]} if found and found["has_dependents"] else set()
    writes = [
        run_store.run_complete_writes(run_rows, changes=len(run_rows)),
        task_store.task_complete_writes(task_rows, changes=len(task_rows)),
    ]
    task_ids = [row["task_id"] for row in task_rows]
    dependents = task_store.dependency_dependents_soon(conn, task_ids) if len(run_rows) >= WRITES_SOON_AT else None
    if dependents is None:
        return await task_store.dependency_dependents_after(conn, writes, task_ids)
    # SQLite: the read first (it reads nothing the writes change), then the writes, both sent at once; the
    # caller goes on (building a claim, say) while SQLite writes them, and the unit's end waits for them.
    if write_all_soon(conn, writes) is None:
        await write_all(conn, writes)
    return await dependents


# Completions of at least this many runs are written on SQLite without waiting (``complete``): the read of
# their dependents then goes on its own, one more hand-over (~0.2 ms of the loop), against ~35 µs a
# completion of SQLite's writing that the caller's next work runs beside. Only as one statement does that
# writing run beside Python (``fast.MANY_AS_ONE_FROM``): run once per row it takes the GIL for every row.
WRITES_SOON_AT = MANY_AS_ONE_FROM


def _claim_moving_tasks(limit: int | None = None, claim: sa.Update | None = None) -> sa.Select[Any]:
    """The one-statement claim of ``runs.claim_statement`` (or ``claim``), which also moves each claimed
    run's task from ready to in progress (reserving its events' numbers) and writes the two events of each
    task it moved (``_claim_events``): the runs claimed, each beside its task if it moved."""
    claimed = (claim if claim is not None else run_store.claim_statement(limit)).cte("claimed")
    now = sa.bindparam("now", type_=tasks.c.updated_at.type)
    moved = (
        sa.update(tasks)
        .where(tasks.c.id == claimed.c.task_id, tasks.c.status == inline("ready"))
        .values(
            status=sa.bindparam("to_status", type_=tasks.c.status.type),
            updated_at=now,
            last_activity_at=now,
            blocked_reason=None,
            event_sequence=tasks.c.event_sequence + sa.bindparam("events", type_=sa.Integer),
        )
        .returning(*tasks.c)
        .cte("moved")
    )
    return (
        sa.select(claimed, *(column.label(_TASK_PREFIX + column.name) for column in moved.c))
        .select_from(claimed.outerjoin(moved, moved.c.id == claimed.c.task_id))
        .add_cte(_claim_events(claimed, moved))
    )


def _claim_events(claimed: sa.CTE, moved: sa.CTE) -> sa.CTE:
    """The events of a claimed run whose task moved, in the first two of the ``:events`` numbers the move
    reserved (a claim that starts reserves a third, for the run.started its caller records): ``:run_event``
    (its payload ``:run_payload`` with the run's attempt) then ``:task_event`` (``:task_payload``), by the run's
    claimer, from ``:origin``. Written by the claiming statement itself, so that a claim is that statement
    between BEGIN and COMMIT (its events were an INSERT of their own)."""
    pair = sa.union_all(sa.select(sa.literal(0).label("n")), sa.select(sa.literal(1).label("n"))).subquery("pair")
    first = pair.c.n == 0
    kind = sa.case(
        (first, sa.bindparam("run_event", type_=sa.String)), else_=sa.bindparam("task_event", type_=sa.String)
    )
    run_payload = sa.bindparam("run_payload", type_=JSONB).op("||")(
        sa.func.jsonb_build_object("attempt", claimed.c.attempt)
    )
    rows_ = (
        sa.select(
            claimed.c.workspace_id,
            claimed.c.task_id,
            claimed.c.id,
            moved.c.event_sequence - sa.bindparam("events", type_=sa.Integer) + 1 + pair.c.n,
            kind,
            claimed.c.claimed_by_kind,
            claimed.c.claimed_by_ref,
            sa.bindparam("origin_kind", type_=sa.String),
            sa.bindparam("origin_ref", type_=sa.String),
            sa.case((first, run_payload), else_=sa.bindparam("task_payload", type_=JSONB)),
            sa.bindparam("now", type_=events.c.created_at.type),
        )
        .select_from(claimed.join(moved, moved.c.id == claimed.c.task_id).join(pair, sa.true()))
        .order_by(claimed.c.id, pair.c.n)
    )
    columns = ["workspace_id", "task_id", "run_id", "task_sequence", "type", "actor_kind", "actor_ref"]
    columns += ["origin_kind", "origin_ref", "payload", "created_at"]
    return sa.insert(events).from_select(columns, rows_).cte("claim_events")


_CLAIM_MOVING_TASKS = Statement(_claim_moving_tasks())
_CLAIM_ONE_MOVING_TASK = Statement(_claim_moving_tasks(limit=1))  # a worker's loop: see claim_statement


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """What one claim call asks for: up to ``limit`` runs of the queue for ``claimer``, with tokens
    ``token_prefix + run id`` and leases until ``lease_until``, their ready tasks moved to ``task_status``
    reserving ``task_events`` event numbers on each."""

    workspace_id: str
    queue_id: str
    queue_name: str
    now: datetime
    limit: int
    token_prefix: str
    lease_until: datetime
    claimer: Actor
    idempotency_key: str | None
    task_status: str
    task_events: int
    # The events the claiming statement writes for each run whose task it moves (PostgreSQL).
    origin: Actor
    run_event: str
    run_payload: dict[str, Any]  # without the run's attempt, which the statement adds
    task_event: str
    task_payload: dict[str, Any]
    # The state the runs are left in: running for a claim that starts them (their tasks then reserve a
    # third event number, for the run.started the caller records).
    marks: run_store.ClaimMarks = run_store.CLAIMED

    @property
    def start(self) -> bool:
        return self.marks.started_at is not None

    def params(self) -> dict[str, Any]:
        return {
            **self.marks.params(),
            "workspace_id": self.workspace_id,
            "queue_id": self.queue_id,
            "limit": self.limit,
            "prefix": self.token_prefix,
            "now": self.now,
            "lease": self.lease_until,
            "kind": self.claimer.kind,
            "ref": self.claimer.ref,
            "idempotency_key": self.idempotency_key,
            "to_status": self.task_status,
            "events": self.task_events,
            "origin_kind": self.origin.kind,
            "origin_ref": self.origin.ref,
            "run_event": self.run_event,
            "run_payload": self.run_payload,
            "task_event": self.task_event,
            "task_payload": self.task_payload,
        }


async def claim(
    conn: AsyncConnection, spec: ClaimSpec, writes: Sequence[Write] = ()
) -> tuple[list[Run], dict[str, Task] | None]:
    """Claim up to ``spec.limit`` runs of the queue and, on PostgreSQL in the same statement, move their
    ready tasks (as ``tasks.task_claim_ready`` does): the runs claimed, and the tasks moved by id (a task
    that was not ready is not among them). Elsewhere the tasks are not moved here: None, and the caller
    moves them. ``writes`` (rows the claim does not read: events) are written first, on PostgreSQL in the
    same statement."""
    if conn.dialect.name != "postgresql":
        await write_all(conn, writes)
        claimed = await run_store.run_claim(
            conn,
            workspace_id=spec.workspace_id,
            queue_id=spec.queue_id,
            now=spec.now,
            limit=spec.limit,
            token_prefix=spec.token_prefix,
            lease_until=spec.lease_until,
            claimer=spec.claimer,
            idempotency_key=spec.idempotency_key,
            marks=spec.marks,
        )
        return claimed, None
    statement = _CLAIM_ONE_MOVING_TASK if spec.limit == 1 else _CLAIM_MOVING_TASKS
    return _claimed(await rows_after(conn, writes, statement, spec.params()), spec.queue_name)


def _candidates_with_tasks(dialect: str) -> sa.Select[Any]:
    """What ``runs.run_claim_candidates`` reads, each run beside its task (SQLite: no row locks)."""
    paired = sa.select(runs, *(column.label(_TASK_PREFIX + column.name) for column in tasks.c))
    return run_store.claimable(paired.select_from(runs.join(tasks, tasks.c.id == runs.c.task_id)))


_CANDIDATES_WITH_TASKS = Statement(_candidates_with_tasks)


def claim_candidates_soon(conn: AsyncConnection, spec: ClaimSpec) -> SentRead | None:
    """SQLite: the runs a claim of ``spec`` takes and their tasks, read without waiting (``fast.read_soon``),
    ahead of the rest of the unit; ``claim_read`` claims them. None on PostgreSQL, whose claim locks what
    it reads (``SKIP LOCKED``) in the statement that claims."""
    params = {"workspace_id": spec.workspace_id, "queue_id": spec.queue_id, "now": spec.now, "limit": spec.limit}
    return read_soon(conn, _CANDIDATES_WITH_TASKS, params)


async def claim_read(conn: AsyncConnection, spec: ClaimSpec, read: SentRead) -> tuple[list[Run], dict[str, Task]]:
    """Claim the runs ``claim_candidates_soon`` read, moving their ready tasks, as ``claim`` does; the writes
    sent without waiting (``fast.write_all_soon``), each to change exactly the rows it names. Read under
    the transaction's write lock (SQLite has one writer), the rows are as read unless this transaction
    changed them since, which the caller rules out. The runs claimed, and the tasks moved by id."""
    found = await read.rows()
    write, claimed = run_store.run_claim_marks(
        [rows.run(row) for row in found],
        now=spec.now,
        token_prefix=spec.token_prefix,
        lease_until=spec.lease_until,
        claimer=spec.claimer,
        idempotency_key=spec.idempotency_key,
        marks=spec.marks,
    )
    moved = {}
    for row in found:
        task = rows.task(_task_part(row), spec.queue_name)
        if task.status == "ready":
            moved[task.id] = changed(
                task,
                status=spec.task_status,
                updated_at=spec.now,
                last_activity_at=spec.now,
                blocked_reason=None,
                event_sequence=task.event_sequence + spec.task_events,
            )
    writes = [write]
    if moved:
        status, events = spec.task_status, spec.task_events
        writes.append(task_store.task_claim_ready_writes(list(moved), status=status, now=spec.now, events=events))
    if write_all_soon(conn, writes) is None:
        await write_all(conn, writes)
    return claimed, moved


_CLAIM_EACH: dict[int, Statement] = {}


def claim_each_statement(count: int) -> Statement:
    """The statement ``claim_each`` runs for ``count`` claimers (PostgreSQL): one per count, compiled once."""
    statement = _CLAIM_EACH.get(count)
    if statement is None:
        statement = _CLAIM_EACH[count] = Statement(_claim_moving_tasks(claim=run_store.claim_each_statement(count)))
    return statement


async def claim_each(
    conn: AsyncConnection, spec: ClaimSpec, claimers: list[Claimer], writes: Sequence[Write] = ()
) -> tuple[list[Run], dict[str, Task] | None]:
    """``claim`` of one run for each of ``claimers`` (actor, token prefix, idempotency key), in order while
    there are runs: the runs claimed, the n-th for the n-th claimer with its token ``prefix + run id``, and
    the tasks moved (None where the caller moves them, as for ``claim``). ``spec``'s claimer, prefix and key
    are not used. On PostgreSQL one statement (with ``writes``, as ``claim``); elsewhere a claim for the
    first claimer, then each run handed on."""
    if conn.dialect.name == "postgresql":
        statement = claim_each_statement(len(claimers))
        listed = [
            {"n": n, "kind": a.kind, "ref": a.ref, "prefix": p, "key": k}
            for n, (a, p, k) in enumerate(claimers, start=1)
        ]
        found = await rows_after(conn, writes, statement, {**spec.params(), "claimers": listed})
        return _claimed(found, spec.queue_name)
    first = replace(spec, claimer=claimers[0][0], token_prefix=claimers[0][1], limit=len(claimers))
    claimed, _ = await claim(conn, first, writes)
    handed = [
        changed(
            run,
            claimed_by=actor,
            claim_token_hash=hash_secret(prefix + run.id),
            idempotency_key=key or run.idempotency_key,
        )
        for run, (actor, prefix, key) in zip(claimed, claimers, strict=False)
    ]
    await run_store.run_hand_to(
        conn,
        [
            {
                "run_id": run.id,
                "kind": actor.kind,
                "ref": actor.ref,
                "token_hash": run.claim_token_hash,
                "idempotency_key": key,
            }
            for run, (actor, _, key) in zip(handed, claimers, strict=False)
        ],
    )
    return handed, None


Claimer = tuple[Actor, str, str | None]  # who claims, their token's prefix, the idempotency key of their call


def _claimed(found: list[dict[str, Any]], queue_name: str) -> tuple[list[Run], dict[str, Task]]:
    claimed_runs, moved_tasks = [], {}
    for row in found:
        if row["id"] is None:  # the one row of a completion that claimed nothing
            continue
        claimed_runs.append(rows.run(row))
        if row[_TASK_PREFIX + "id"] is not None:
            task = rows.task(_task_part(row), queue_name)
            moved_tasks[task.id] = task
    claimed_runs.sort(key=lambda r: (-r.priority_rank, r.available_at, r.id))
    return claimed_runs, moved_tasks


def _complete_one_and_claim() -> sa.Select[Any]:
    """``_complete_one`` and ``_claim_moving_tasks(limit=1)`` as one statement: a worker's loop completes its
    run and claims its next in one round trip. One row even when nothing is claimed (its run columns NULL),
    which says whether the completed task has dependents.

    The two parts touch different rows: the completed run is not queued and its task not ready, so the
    claim, which reads the snapshot the statement began with, could not take either."""
    done_run, done_task, waiting = _completion("done_events")
    claims = _claim_moving_tasks(limit=1).subquery("claims")
    one = sa.select(sa.literal(1).label("one")).subquery("one")
    return sa.select(waiting, *claims.c).select_from(one.outerjoin(claims, sa.true())).add_cte(done_run, done_task)


_COMPLETE_ONE_AND_CLAIM = Statement(_complete_one_and_claim())


async def complete_and_claim_one(
    conn: AsyncConnection,
    run_row: dict[str, Any],
    task_row: dict[str, Any],
    spec: ClaimSpec,
    writes: Sequence[Write] = (),
) -> tuple[set[str], list[Run], dict[str, Task] | None]:
    """``complete`` for one run, then ``claim`` of one more run (``spec.limit`` is 1): on PostgreSQL in one
    statement, ``writes`` with it (as ``claim``). The ids of the completed tasks some task depends on, and
    what ``claim`` returns."""
    assert spec.limit == 1
    if conn.dialect.name != "postgresql":
        waiting = await complete(conn, [run_row], [task_row])
        return (waiting, *await claim(conn, spec, writes))
    params = {**_completion_params(run_row, task_row), **spec.params()}
    found = await rows_after(conn, writes, _COMPLETE_ONE_AND_CLAIM, params)
    waiting = {task_row["task_id"]} if found and found[0]["has_dependents"] else set()
    return (waiting, *_claimed(found, spec.queue_name))
