"""Named operations on runs: enqueue, claim, lease bookkeeping. The claim is where backends differ."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import Actor
from workloom.domain.models import Run, changed
from workloom.domain.secrets import hash_secret
from workloom.store import rows
from workloom.store.fast import ById, Statement, Statements, Write, one_of, workspace_filter, write_all
from workloom.store.schema import HELD_RUN, inline, queues, runs

_WITH_QUEUE = sa.select(runs, queues.c.name.label("queue_name")).select_from(
    runs.join(queues, queues.c.id == runs.c.queue_id)
)

_HELD = ("claimed", "starting", "running")
_ACTIVE = ("queued", *_HELD)


def run_values(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "workspace_id": run.workspace_id,
        "task_id": run.task_id,
        "queue_id": run.queue_id,
        "attempt": run.attempt,
        "status": run.status,
        "priority": run.priority_rank,
        "available_at": run.available_at,
        "queued_at": run.queued_at,
        "claimed_at": run.claimed_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "heartbeat_at": run.heartbeat_at,
        "lease_until": run.lease_until,
        "claim_token_hash": run.claim_token_hash,
        **rows.actor_columns("claimed_by", run.claimed_by),
        "end_reason": run.end_reason,
        "error": run.error,
        "result": run.result,
        "progress": run.progress,
        "usage": run.usage,
        "metadata": run.metadata,
        "session_id": run.session_id,
        **rows.actor_columns("origin", run.origin),
        "idempotency_key": run.idempotency_key,
    }


async def run_insert(conn: AsyncConnection, run: Run) -> None:
    await write_all(conn, run_inserts([run]))


_INSERT = Statements(
    lambda _dialect, names: sa.insert(runs).values({n: sa.bindparam(n, type_=runs.c[n].type) for n in names})
)


def run_inserts(many: list[Run]) -> list[Write]:
    """The insert of many new runs, for ``fast.write_all``."""
    values = [run_values(run) for run in many]
    return [Write(_INSERT.for_columns(values[0]), values)] if values else []


def _get(lock: bool) -> Statement:
    stmt = _WITH_QUEUE.where(runs.c.workspace_id == sa.bindparam("workspace_id"), runs.c.id == sa.bindparam("run_id"))
    return Statement(stmt.with_for_update(of=runs) if lock else stmt)


_GET = {False: _get(False), True: _get(True)}


async def run_get(conn: AsyncConnection, workspace_id: str, run_id: str, *, lock: bool = False) -> Run | None:
    row = await _GET[lock].first(conn, {"workspace_id": workspace_id, "run_id": run_id})
    return rows.run(row) if row else None


async def run_get_many(
    conn: AsyncConnection, workspace_id: str, run_ids: list[str], *, lock: bool = False
) -> dict[str, Run]:
    """Runs by id (those that exist); ``lock`` takes their row locks, in id order."""
    if not run_ids:
        return {}
    found = await _GET_MANY[lock].rows(conn, {"workspace_id": workspace_id, "ids": run_ids})
    return {row["id"]: rows.run(row) for row in found}


def _get_many(lock: bool) -> Statement:
    def build(dialect: str) -> sa.Select[Any]:
        where = (workspace_filter(runs.c.workspace_id, "workspace_id"), one_of(runs.c.id, "ids", dialect))
        stmt = _WITH_QUEUE.where(*where).order_by(runs.c.id)
        return stmt.with_for_update(of=runs) if lock else stmt

    return Statement(build)


_GET_MANY = {False: _get_many(False), True: _get_many(True)}


async def run_active_for_task(conn: AsyncConnection, task_id: str, *, lock: bool = False) -> Run | None:
    stmt = sa.select(runs).where(runs.c.task_id == task_id, runs.c.status.in_(_ACTIVE))
    if lock:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).mappings().first()
    return rows.run(row) if row else None


async def run_active_for_tasks(conn: AsyncConnection, workspace_id: str, task_ids: list[str]) -> dict[str, Run]:
    """The active run (at most one each) of each of ``task_ids`` that has one."""
    if not task_ids:
        return {}
    result = await conn.execute(
        _WITH_QUEUE.where(runs.c.workspace_id == workspace_id, runs.c.task_id.in_(task_ids), runs.c.status.in_(_ACTIVE))
    )
    return {row["task_id"]: rows.run(row) for row in result.mappings()}


async def run_list_for_task(conn: AsyncConnection, task_id: str) -> list[Run]:
    result = await conn.execute(
        _WITH_QUEUE.where(runs.c.task_id == task_id).order_by(runs.c.queued_at, runs.c.attempt, runs.c.id)
    )
    return [rows.run(row) for row in result.mappings()]


async def run_list_for_tasks(conn: AsyncConnection, task_ids: list[str]) -> dict[str, list[Run]]:
    """Each task's runs, the most recent first (by attempt, then queueing), for the tasks that have any."""
    if not task_ids:
        return {}
    result = await conn.execute(
        _WITH_QUEUE.where(runs.c.task_id.in_(task_ids)).order_by(
            runs.c.task_id, runs.c.attempt.desc(), runs.c.queued_at.desc(), runs.c.id.desc()
        )
    )
    found: dict[str, list[Run]] = {}
    for row in result.mappings():
        found.setdefault(row["task_id"], []).append(rows.run(row))
    return found


async def run_update(
    conn: AsyncConnection, run_id: str, values: dict[str, Any], *, expected_status: str | tuple[str, ...] | None = None
) -> bool:
    return bool(await _UPDATE.execute(conn, run_id, values, expected_status))


_UPDATE = ById(runs)
_COMPLETE = Statement(
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"))
    .values(
        status=sa.bindparam("status"),
        result=sa.bindparam("result", type_=runs.c.result.type),
        end_reason=sa.bindparam("end_reason"),
        ended_at=sa.bindparam("ended_at"),
        usage=sa.bindparam("usage", type_=runs.c.usage.type),
    )
)


async def run_complete_many(conn: AsyncConnection, rows_: list[dict[str, Any]]) -> None:
    """End many runs (locked by the caller) in one round trip: run_id, status, result, end_reason, ended_at,
    usage."""
    await _COMPLETE.many(conn, rows_)


def run_complete_writes(rows_: list[dict[str, Any]], *, changes: int | None = None) -> Write:
    """``run_complete_many`` as a write, to be sent with others (``fast.write_all``, ``fast.rows_after``);
    ``changes``: how many rows it must change."""
    return Write(_COMPLETE, rows_, changes)


_START = Statement(
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"))
    .values(status=sa.bindparam("status"), started_at=sa.bindparam("started_at", type_=runs.c.started_at.type))
)


def run_start_writes(rows_: list[dict[str, Any]]) -> Write:
    """Runs (locked by the caller) marked running, as one write: run_id, status, started_at."""
    return Write(_START, rows_, len(rows_))


def _renew(reports: bool) -> Statement:
    values: dict[str, Any] = {
        "heartbeat_at": sa.bindparam("heartbeat_at", type_=runs.c.heartbeat_at.type),
        "lease_until": sa.bindparam("lease_until", type_=runs.c.lease_until.type),
    }
    if reports:
        values["progress"] = sa.bindparam("progress", type_=runs.c.progress.type)
        values["usage"] = sa.bindparam("usage", type_=runs.c.usage.type)
    return Statement(sa.update(runs).where(runs.c.id == sa.bindparam("run_id")).values(values))


_RENEW = {False: _renew(False), True: _renew(True)}


def run_renew_writes(rows_: list[dict[str, Any]], *, reports: bool = False) -> Write:
    """Leases (of runs locked by the caller) renewed, as one write: run_id, heartbeat_at, lease_until, and
    with ``reports`` the runs' progress and usage as they now are."""
    return Write(_RENEW[reports], rows_, len(rows_))


@dataclass(frozen=True, slots=True)
class ClaimMarks:
    """The state a claim leaves its runs in (the engine decides it: claimed, or running for a claim that
    starts them), as ``_MARKS`` writes it."""

    status: str = "claimed"
    started_at: datetime | None = None

    def params(self) -> dict[str, Any]:
        return {"claim_status": self.status, "claim_started_at": self.started_at}


CLAIMED = ClaimMarks()


async def run_claim(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    queue_id: str,
    now: datetime,
    limit: int,
    token_prefix: str,
    lease_until: datetime,
    claimer: Actor,
    idempotency_key: str | None,
    marks: ClaimMarks = CLAIMED,
) -> list[Run]:
    """Claim up to ``limit`` runs of the queue, highest priority then oldest first; the runs as claimed
    (in the state ``marks`` says).

    Each run's claim token is ``token_prefix + run id``; only its hash is stored. Two statements: the
    candidates (locked ``SKIP LOCKED`` on PostgreSQL), then the marks. This is SQLite's claim, where the
    one writer (the transaction began IMMEDIATE) makes the select exact; PostgreSQL claims in one statement
    (``claim_statement``, run by ``held.claim`` with the tasks' move)."""
    candidates = await run_claim_candidates(conn, workspace_id=workspace_id, queue_id=queue_id, now=now, limit=limit)
    write, claimed = run_claim_marks(
        candidates,
        now=now,
        token_prefix=token_prefix,
        lease_until=lease_until,
        claimer=claimer,
        idempotency_key=idempotency_key,
        marks=marks,
    )
    await _MARK_CLAIMED.many(conn, write.rows)
    return claimed


def run_claim_marks(
    candidates: list[Run],
    *,
    now: datetime,
    token_prefix: str,
    lease_until: datetime,
    claimer: Actor,
    idempotency_key: str | None,
    marks: ClaimMarks = CLAIMED,
) -> tuple[Write, list[Run]]:
    """Marking queued ``candidates`` claimed (as ``run_claim`` does, in the state ``marks`` says), as a write
    that must change each of them, and the runs as it leaves them."""
    claim = {"now": now, "lease": lease_until, "kind": claimer.kind, "ref": claimer.ref, **marks.params()}
    rows_, claimed = [], []
    for run in candidates:
        token_hash = hash_secret(token_prefix + run.id)
        rows_.append({"run_id": run.id, "token_hash": token_hash, "idempotency_key": idempotency_key, **claim})
        claimed.append(
            changed(
                run,
                status=marks.status,
                started_at=marks.started_at,
                claim_token_hash=token_hash,
                claimed_at=now,
                heartbeat_at=now,
                lease_until=lease_until,
                claimed_by=claimer,
                idempotency_key=idempotency_key or run.idempotency_key,
            )
        )
    return Write(_MARK_CLAIMED, rows_, len(rows_)), claimed


def _locked_candidates(limit: sa.ColumnElement[int], *, ordered: bool = False) -> sa.Select[Any]:
    """The ids of the queue's claimable runs a claim takes, best first, locked ``SKIP LOCKED``; ``ordered``:
    with the columns they are ordered by."""
    candidate = runs.alias("candidate")
    columns = (candidate.c.id, candidate.c.priority, candidate.c.available_at) if ordered else (candidate.c.id,)
    return (
        sa.select(*columns)
        .where(
            candidate.c.workspace_id == sa.bindparam("workspace_id"),
            candidate.c.queue_id == sa.bindparam("queue_id"),
            candidate.c.status == inline("queued"),
            candidate.c.available_at <= sa.bindparam("now", type_=runs.c.available_at.type),
        )
        .order_by(candidate.c.priority.desc(), candidate.c.available_at, candidate.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def claim_statement(limit: int | None = None) -> sa.Update:
    """The claim as one statement (PostgreSQL): the candidates locked with ``SKIP LOCKED`` (concurrent
    claimers take disjoint rows without waiting on each other) and marked claimed where they stand, each
    token's hash written by the database; returns the runs claimed.

    ``limit`` written into the text, else a parameter. With a parameter PostgreSQL plans the statement
    afresh at every execution (a cached plan would have to assume a tenth of the queue is taken, and sort),
    which is half of what a one-run claim costs it; with ``LIMIT 1`` in the text the cached plan is the
    right one."""
    picked = _locked_candidates(
        limit=sa.bindparam("limit", type_=sa.Integer) if limit is None else sa.literal(limit, literal_execute=True)
    ).subquery("picked")
    token = sa.bindparam("prefix", type_=sa.String) + runs.c.id
    token_hash = sa.func.encode(sa.func.sha256(sa.func.convert_to(token, "UTF8")), "hex")  # = hash_secret(token)
    return (
        sa.update(runs)
        .where(runs.c.id == picked.c.id)
        .values({**_MARKS, "claim_token_hash": token_hash})
        .returning(*runs.c)
    )


def claim_each_statement(limit: int) -> sa.Update:
    """``claim_statement`` for several claimers at once (PostgreSQL): as many runs as there are claimers in
    ``:claimers`` (a JSON array of objects n, kind, ref, prefix, key; n counting from 1), the n-th run in
    claim order going to the n-th claimer, its token ``prefix + run id`` (each claimer's a secret of its
    own), recording the claimer's idempotency key (``key``, or null)."""
    locked = _locked_candidates(sa.literal(limit, literal_execute=True), ordered=True).subquery("locked")
    order = (locked.c.priority.desc(), locked.c.available_at, locked.c.id)
    ranked = sa.select(locked.c.id, sa.func.row_number().over(order_by=order).label("n")).subquery("ranked")
    claimers = (
        sa.func.jsonb_to_recordset(sa.bindparam("claimers", type_=JSONB))
        .table_valued(
            sa.column("n", sa.Integer),
            sa.column("kind", sa.Text),
            sa.column("ref", sa.Text),
            sa.column("prefix", sa.Text),
            sa.column("key", sa.Text),
        )
        .render_derived("claimer", with_types=True)
    )
    token_hash = sa.func.encode(sa.func.sha256(sa.func.convert_to(claimers.c.prefix + runs.c.id, "UTF8")), "hex")
    return (
        sa.update(runs)
        .where(runs.c.id == ranked.c.id, claimers.c.n == ranked.c.n)
        .values(
            {
                **_MARKS,
                "claimed_by_kind": claimers.c.kind,
                "claimed_by_ref": claimers.c.ref,
                "claim_token_hash": token_hash,
                "idempotency_key": sa.func.coalesce(claimers.c.key, runs.c.idempotency_key),
            }
        )
        .returning(*runs.c)
    )


async def run_claim_candidates(
    conn: AsyncConnection, *, workspace_id: str, queue_id: str, now: datetime, limit: int
) -> list[Run]:
    """Lock up to ``limit`` claimable runs, highest priority then oldest first.

    On PostgreSQL ``SKIP LOCKED`` lets concurrent claimers take disjoint rows without waiting on each
    other; SQLite has a single writer (the transaction began IMMEDIATE), so a plain select is exact.
    """
    params = {"workspace_id": workspace_id, "queue_id": queue_id, "now": now, "limit": limit}
    return [rows.run(row) for row in await _CANDIDATES.rows(conn, params)]


def claimable(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """``stmt`` (a select from ``runs``) narrowed to the runs a claim of ``:queue_id`` takes: queued and
    available ``:now``, highest priority then oldest first, at most ``:limit``."""
    return (
        stmt.where(
            runs.c.workspace_id == sa.bindparam("workspace_id"),
            runs.c.queue_id == sa.bindparam("queue_id"),
            runs.c.status == inline("queued"),
            runs.c.available_at <= sa.bindparam("now", type_=runs.c.available_at.type),
        )
        .order_by(runs.c.priority.desc(), runs.c.available_at, runs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


def _candidates(dialect: str) -> sa.Select[Any]:
    stmt = claimable(sa.select(runs))
    return stmt.with_for_update(skip_locked=True, of=runs) if dialect == "postgresql" else stmt


_CANDIDATES = Statement(_candidates)


async def run_claim_next_candidate(
    conn: AsyncConnection, *, workspace_id: str, queue_ids: list[str] | None, now: datetime
) -> Run | None:
    """Lock the best claimable run of the workspace (``queue_ids``: of those queues only): highest
    priority, then the one claimable longest. ``SKIP LOCKED`` as in ``run_claim_candidates``."""
    stmt = sa.select(runs).where(
        runs.c.workspace_id == workspace_id, runs.c.status == inline("queued"), runs.c.available_at <= now
    )
    if queue_ids is not None:
        stmt = stmt.where(runs.c.queue_id.in_(queue_ids))
    stmt = stmt.order_by(runs.c.priority.desc(), runs.c.available_at, runs.c.id).limit(1)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=runs)
    row = (await conn.execute(stmt)).mappings().first()
    return rows.run(row) if row else None


async def run_mark_claimed(conn: AsyncConnection, claims: list[dict[str, Any]]) -> None:
    """Write many claims in one round trip; each dict has run_id, token hash, lease, claimer, the claim's
    idempotency key (None keeps the run's own) and ``ClaimMarks.params``."""
    await _MARK_CLAIMED.many(conn, claims)


_HAND_TO = Statement(
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"))
    .values(
        claimed_by_kind=sa.bindparam("kind"),
        claimed_by_ref=sa.bindparam("ref"),
        claim_token_hash=sa.bindparam("token_hash"),
        idempotency_key=sa.func.coalesce(sa.bindparam("idempotency_key", type_=sa.String), runs.c.idempotency_key),
    )
)


async def run_hand_to(conn: AsyncConnection, claims: list[dict[str, Any]]) -> None:
    """Runs claimed in this transaction, each handed to its own claimer with its own token (run_id, kind,
    ref, token_hash, and the idempotency key the claimer's call came with, or None)."""
    await _HAND_TO.many(conn, claims)


# What marking a run claimed writes, but for its token hash.
# A claim that starts its runs (``start``) marks them running where they stand: ``:claim_status`` is
# ``claimed`` or ``running``, ``:claim_started_at`` null or the claim's instant.
_MARKS: dict[str, Any] = {
    "status": sa.bindparam("claim_status", type_=runs.c.status.type),
    "started_at": sa.bindparam("claim_started_at", type_=runs.c.started_at.type),
    "claimed_at": sa.bindparam("now", type_=runs.c.claimed_at.type),
    "heartbeat_at": sa.bindparam("now", type_=runs.c.claimed_at.type),
    "lease_until": sa.bindparam("lease", type_=runs.c.lease_until.type),
    "claimed_by_kind": sa.bindparam("kind"),
    "claimed_by_ref": sa.bindparam("ref"),
    "idempotency_key": sa.func.coalesce(sa.bindparam("idempotency_key", type_=sa.String), runs.c.idempotency_key),
}
_MARK_CLAIMED = Statement(
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"), runs.c.status == "queued")
    .values({**_MARKS, "claim_token_hash": sa.bindparam("token_hash")})
)


async def run_expired_leases(conn: AsyncConnection, now: datetime, limit: int) -> list[Run]:
    stmt = (
        sa.select(runs)
        .where(runs.c.status.in_(_HELD), runs.c.lease_until <= now)
        .order_by(runs.c.lease_until)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [rows.run(row) for row in (await conn.execute(stmt)).mappings()]


async def run_queue_depths(conn: AsyncConnection, now: datetime) -> list[tuple[str, str, int, datetime | None]]:
    """(workspace_id, queue_id, queued runs available now, oldest available_at) per queue."""
    result = await conn.execute(
        sa.select(runs.c.workspace_id, runs.c.queue_id, sa.func.count(), sa.func.min(runs.c.available_at))
        .where(runs.c.status == "queued", runs.c.available_at <= now)
        .group_by(runs.c.workspace_id, runs.c.queue_id)
    )
    return [(r[0], r[1], int(r[2]), r[3]) for r in result]


async def run_count_held(conn: AsyncConnection, queue_id: str) -> int:
    result = await conn.execute(
        sa.select(sa.func.count()).select_from(runs).where(runs.c.queue_id == queue_id, sa.text(HELD_RUN))
    )
    return int(result.scalar_one())


async def run_update_priority_for_task(conn: AsyncConnection, task_id: str, rank: int) -> None:
    await conn.execute(
        sa.update(runs).where(runs.c.task_id == task_id, runs.c.status == "queued").values(priority=rank)
    )


async def run_move_queue_for_task(conn: AsyncConnection, task_id: str, queue_id: str) -> None:
    await conn.execute(
        sa.update(runs).where(runs.c.task_id == task_id, runs.c.status == "queued").values(queue_id=queue_id)
    )
