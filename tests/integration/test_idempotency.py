"""Idempotency keys: a repeat gets the first answer and changes nothing; a different request is refused."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from harness import WORKER
from test_hot_paths import POSTGRES_ONLY

from workloom.domain.errors import IdempotencyMismatch
from workloom.domain.queries import ListQuery
from workloom.engine import runs, tasks
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey
from workloom.store.fast import Statement, Write
from workloom.store.schema import task_dependencies


def _task_answer(task):
    return 201, {"id": task.id, "identifier": task.identifier, "status": task.status}


def _claim_answer(claims):
    return 200, [{"run_id": c.run.id, "attempt": c.run.attempt, "claim_token": c.claim_token} for c in claims]


async def _create(h, key, body):
    return await h.wl.respond(
        h.principal,
        lambda u: tasks.create(u, NewTask(**body)),
        _task_answer,
        IdempotencyKey(key, f"POST /v1/tasks {sorted(body.items())}".encode()),
    )


async def test_a_repeated_create_returns_the_first_answer_and_creates_nothing(h):
    body = {"title": "once", "queue": "q"}
    first = await _create(h, "key-1", body)
    events_after_first = await h.wl.events.last_sequence(h.principal)
    again = await _create(h, "key-1", body)

    assert again == first
    assert first[0] == 201
    page = await h.list(ListQuery(count=True))
    assert page.total == 1
    assert await h.wl.events.last_sequence(h.principal) == events_after_first


async def test_a_key_reused_for_a_different_request_is_refused(h):
    await _create(h, "key-1", {"title": "once"})
    with pytest.raises(IdempotencyMismatch):
        await _create(h, "key-1", {"title": "something else"})
    assert (await h.list(ListQuery(count=True))).total == 1


async def test_keys_are_per_workspace(h):
    other = await h.other_workspace("globex")
    mine = await _create(h, "shared-key", {"title": "mine"})
    theirs = await _create(other, "shared-key", {"title": "mine"})
    assert mine[1]["id"] != theirs[1]["id"]


async def _claim(h, key):
    return await h.wl.claim(
        h.principal,
        "q",
        WORKER,
        limit=1,
        lease_seconds=None,
        wait_seconds=0,
        render=_claim_answer,
        idempotency=IdempotencyKey(key, b"POST /v1/queues/q/claim {limit: 1}"),
    )


async def test_a_replayed_claim_returns_the_same_claim_token(h):
    first_task = await h.create("first", queue="q", priority="high")
    second_task = await h.create("second", queue="q")
    status, [claim] = await _claim(h, "claim-1")
    assert status == 200

    assert await _claim(h, "claim-1") == (200, [claim])
    # The replayed token is the real one: it completes the run.
    await h.do(lambda u: runs.complete(u, claim["run_id"], claim["claim_token"], "ok"))
    assert (await h.task(first_task.id)).status == "completed"
    assert (await h.event_types(first_task.id)).count("run.claimed") == 1
    # A new key claims the next task.
    _, [next_claim] = await _claim(h, "claim-2")
    assert next_claim["run_id"] != claim["run_id"]
    assert (await h.task(second_task.id)).status == "in_progress"


async def test_a_repeated_complete_returns_the_first_answer(h):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    key = IdempotencyKey("complete-1", b"POST /v1/runs/x/complete {result: 42}")

    async def complete():
        return await h.wl.respond(
            h.principal,
            lambda u: runs.complete(u, claim.run.id, claim.claim_token, 42),
            lambda run: (200, {"status": run.status, "result": run.result}),
            key,
        )

    assert await complete() == (200, {"status": "completed", "result": 42})
    timeline = await h.timeline(task.id)
    assert await complete() == (200, {"status": "completed", "result": 42})
    assert await h.timeline(task.id) == timeline  # no late_result, no second completion


async def _create_then(h, key, then, render=_task_answer):
    """A keyed create whose unit then does ``then(u, task)`` before it ends."""

    async def op(u):
        task = await tasks.create(u, NewTask(title="kept?", queue="q"))
        then(u, task)
        return task

    return await h.wl.respond(h.principal, op, render, IdempotencyKey(key, b"POST /v1/tasks kept?"))


def _depending_on_itself(h, u, task):
    row = {
        "workspace_id": h.principal.workspace_id,
        "task_id": task.id,
        "depends_on_task_id": task.id,
        "kind": "blocks",
        "created_at": h.clock.now(),
    }
    u.write_later([Write(Statement(sa.insert(task_dependencies)), [row])])


async def test_a_keyed_call_whose_writes_fail_stores_no_answer_and_leaves_nothing(h):
    # Its last writes may be under way while its answer is rendered (on SQLite they are): their failure
    # must still undo the call, answer included, so that the key's next use runs the call afresh.
    events_before = await h.wl.events.last_sequence(h.principal)
    with pytest.raises(sa.exc.IntegrityError):
        await _create_then(h, "key-w", lambda u, task: _depending_on_itself(h, u, task))
    assert (await h.list(ListQuery(count=True))).total == 0
    assert await h.wl.events.last_sequence(h.principal) == events_before

    status, body = await _create_then(h, "key-w", lambda u, task: None)
    assert status == 201 and (await h.task(body["id"])).title == "kept?"
    assert (await h.list(ListQuery(count=True))).total == 1


async def test_a_keyed_call_whose_answer_cannot_be_rendered_leaves_nothing(h):
    def broken(task):
        raise RuntimeError("no answer")

    with pytest.raises(RuntimeError, match="no answer"):
        await _create_then(h, "key-r", lambda u, task: None, render=broken)
    assert (await h.list(ListQuery(count=True))).total == 0

    status, _ = await _create_then(h, "key-r", lambda u, task: None)
    assert status == 201 and (await h.list(ListQuery(count=True))).total == 1


async def _a_call_waits_for_a_keys_lock(h) -> bool:
    async with h.wl.runner.db.read() as conn:
        waiting = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    return bool(waiting)


@POSTGRES_ONLY
async def test_a_repeat_sent_while_the_first_runs_waits_for_it_and_gets_its_answer_on_postgres(h):
    """The key's lock and the look for its answer are one round trip: the look must still see the answer
    that the lock's holder committed while the repeat waited for the lock (migration 0006)."""
    key = IdempotencyKey("race-1", b"POST /v1/tasks once")
    entered, release = asyncio.Event(), asyncio.Event()

    async def first_call(u):
        entered.set()  # the key's lock is held from here until this call commits
        await release.wait()
        return await tasks.create(u, NewTask(title="once"))

    first = asyncio.create_task(h.wl.respond(h.principal, first_call, _task_answer, key))
    await asyncio.wait_for(entered.wait(), 10)
    repeat = asyncio.create_task(
        h.wl.respond(h.principal, lambda u: tasks.create(u, NewTask(title="once")), _task_answer, key)
    )
    async with asyncio.timeout(10):
        while not await _a_call_waits_for_a_keys_lock(h):  # noqa: ASYNC110 (bounded poll of PostgreSQL's state)
            await asyncio.sleep(0.005)
    release.set()

    async with asyncio.timeout(10):
        answers = await asyncio.gather(first, repeat)
    assert answers[0] == answers[1]
    page = await h.list(ListQuery(count=True))
    assert page.total == 1
