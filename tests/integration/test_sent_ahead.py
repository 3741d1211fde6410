"""Work sent to SQLite's thread ahead of the unit that waits for it, and large calls sharing a commit there.

On SQLite a unit may hand statements to its thread and go on without waiting (``fast.write_all_soon``,
``fast.read_soon``): a batch completion that claims the next batch reads the runs it will claim before it
builds the completions, and builds the claim while SQLite writes them. Whatever is sent so is waited for
before the unit commits, and a failure of it rolls the whole unit back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Harness
from test_hot_paths import AWKWARD, DEPENDS, SQLITE_ONLY, HandOvers, created_as_given, dependency_row

from workloom.domain.actors import Actor
from workloom.domain.models import Run, Task
from workloom.engine import runs, tasks
from workloom.engine.shared import MOST_ITEMS_PER_GROUP
from workloom.engine.tasks import NewTask
from workloom.engine.unit import Unit
from workloom.store import fast
from workloom.store import tasks as task_store
from workloom.store.fast import Write, on_sqlite_thread, write_all, write_all_soon
from workloom.store.schema import task_dependencies

WORKER = Actor("agent_session", "batcher")


async def _dependencies(h: Harness) -> int:
    async with h.wl.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(task_dependencies))).scalar_one())


@SQLITE_ONLY
async def test_a_write_sent_without_waiting_that_fails_rolls_its_whole_unit_back(h: Harness) -> None:
    first, second = await h.create("first"), await h.create("second")

    async def unit(u: Unit) -> None:
        assert write_all_soon(u.conn, [Write(DEPENDS, [dependency_row(h, first, second)])]) is not None
        assert write_all_soon(u.conn, [Write(DEPENDS, [dependency_row(h, first, first)])]) is not None  # itself

    # Nobody waited for either write: the unit's end does, and the second one's failure is raised there.
    with pytest.raises(sa.exc.IntegrityError):
        await h.do(unit)
    assert await _dependencies(h) == 0


@SQLITE_ONLY
async def test_a_write_sent_ahead_that_changes_fewer_rows_than_it_must_rolls_its_unit_back(h: Harness) -> None:
    # A claim's tasks were read as ready; the write that moves them must move every one of them.
    ready, other = await h.create("ready", queue="q"), await h.create("other", queue="q")
    await h.claim_one("q")  # ``ready`` is in progress now: not ready any more

    async def unit(u: Unit) -> None:
        moves = task_store.task_claim_ready_writes(
            [ready.id, other.id], status="in_progress", now=h.clock.now(), events=2
        )
        write_all_soon(u.conn, [moves])

    with pytest.raises(sa.exc.DBAPIError, match="2 rows were to change, 1 did"):
        await h.do(unit)
    assert (await h.task(other.id)).status == "ready"


@SQLITE_ONLY
async def test_a_transaction_cannot_commit_what_was_sent_without_waiting_and_never_waited_for(h: Harness) -> None:
    first, second = await h.create("first"), await h.create("second")

    async def sent_and_left() -> None:
        async with h.wl.db.transaction() as conn:
            await conn.execute(sa.select(1))
            write_all_soon(conn, [Write(DEPENDS, [dependency_row(h, first, second)])])

    with pytest.raises(RuntimeError, match="not waited for before commit"):
        await sent_and_left()
    assert await _dependencies(h) == 0
    assert (await h.create("after")).title == "after"  # the one connection is free and usable again


@SQLITE_ONLY
async def test_statements_after_sqlite_ended_the_transaction_are_refused_not_committed_alone(h: Harness) -> None:
    # SQLite rolls a whole transaction back on some failures (a full disk); a statement sent ahead after
    # such a one would otherwise run, and commit, on its own.
    first, second = await h.create("first"), await h.create("second")

    async def unit(u: Unit) -> None:
        await u.conn.execute(sa.select(1))
        await on_sqlite_thread(fast._adapted(u.conn), "ROLLBACK")  # as SQLite does it itself
        await write_all(u.conn, [Write(DEPENDS, [dependency_row(h, first, second)])])

    with pytest.raises(sa.exc.DBAPIError, match="rolled back before this statement"):
        await h.do(unit)
    assert await _dependencies(h) == 0


async def _queue_of(h: Harness, titles: list[tuple[str, str]]) -> list[Task]:
    return [await h.create(title, queue="batch", priority=priority) for title, priority in titles]


async def test_a_batch_completion_claims_the_next_runs_best_first_and_moves_their_tasks(h: Harness) -> None:
    made = await _queue_of(
        h, [("a", "high"), ("b", "high"), ("c", "medium"), ("d", "urgent"), ("e", "low"), ("f", "medium")]
    )
    first = await h.claim("batch", limit=2, worker=WORKER)
    assert sorted(c.task.title for c in first) == ["a", "d"]
    items = [(c.run.id, c.claim_token, {"done": c.task.title}) for c in first]

    outcomes, claimed = await h.do(lambda u: runs.complete_many_and_claim(u, items, "batch", WORKER, 3, None))

    assert [o.status for o in outcomes if isinstance(o, Run)] == ["completed", "completed"]
    assert [c.task.title for c in claimed] == ["b", "c", "f"]
    for claim in claimed:
        stored = await h.task(claim.task.id)
        assert stored == claim.task and stored.status == "in_progress"
        timeline = await h.timeline(claim.task.id)
        assert [e.type for e in timeline][-2:] == ["run.claimed", "task.in_progress"]
        assert [e.task_sequence for e in timeline] == list(range(1, len(timeline) + 1))
    # Each claim holds its run: completing with its token works.
    again = [(c.run.id, c.claim_token, None) for c in claimed]
    assert all(isinstance(o, Run) for o in await h.do(lambda u: runs.complete_many(u, again)))
    assert [c.task.id for c in await h.claim("batch")] == [made[4].id]


async def test_a_batch_completion_claims_the_dependent_it_releases_when_that_is_the_best_run(h: Harness) -> None:
    # On SQLite the claim's runs are read before the completions are written; a dependent those release
    # outranks them, so the claim is made again after the completions.
    first = await h.create("first", queue="batch")
    await h.create("plain", queue="batch")
    released = await h.create("released", queue="batch", priority="urgent", depends_on=[first.id])
    (claim,) = await h.claim("batch", worker=WORKER)
    assert claim.task.id == first.id

    items = [(claim.run.id, claim.claim_token, None)]
    _, claimed = await h.do(lambda u: runs.complete_many_and_claim(u, items, "batch", WORKER, 1, None))

    assert [c.task.id for c in claimed] == [released.id]
    assert (await h.task(released.id)).status == "in_progress"


@SQLITE_ONLY
async def test_a_batch_completion_that_claims_sends_its_writes_ahead_in_few_hand_overs_on_sqlite(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = fast.MANY_AS_ONE_FROM
    await h.do(lambda u: tasks.create_many(u, [NewTask(title=f"job {i}", queue="batch") for i in range(2 * many)]))
    held = await h.claim("batch", limit=many, worker=WORKER)
    items = [(c.run.id, c.claim_token, None) for c in held]
    trips = HandOvers(monkeypatch)

    trips.on = True
    _, claimed = await h.do(lambda u: runs.complete_many_and_claim(u, items, "batch", WORKER, many, None))
    trips.on = False

    assert trips.sent == [
        "SELECT",  # the runs to claim, read first (BEGIN IMMEDIATE goes with it)
        "SELECT",  # the runs to complete and their tasks
        "SELECT",  # whether a task depends on them
        "UPDATE+UPDATE",  # the runs and tasks completed, sent without waiting ...
        "UPDATE+UPDATE",  # ... and the runs claimed and their tasks moved, built meanwhile
        "INSERT",  # the events, four a task
        "commit",
    ], " ".join(trips.sent)
    assert len(claimed) == many and {c.task.id for c in claimed}.isdisjoint(c.task.id for c in held)


@SQLITE_ONLY
async def test_large_calls_share_a_commit_on_sqlite_up_to_a_thousand_items_a_group(h: Harness) -> None:
    shared = h.wl.runner.shared
    assert shared is not None and shared.takes(200)

    async def noop(u: Unit) -> int:
        return 1

    calls = [h.wl.run(h.principal, noop, shared=True, items=400) for _ in range(3)]
    assert await asyncio.gather(*calls) == [1, 1, 1]
    # Two of 400 items fill a group (at most a thousand); the third commits on its own.
    assert 2 * 400 <= MOST_ITEMS_PER_GROUP < 3 * 400
    assert shared.grouped == 2


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_large_calls_commit_alone_on_postgres(h: Harness) -> None:
    shared = h.wl.runner.shared
    assert shared is not None and shared.takes(10) and not shared.takes(11)

    async def noop(u: Unit) -> int:
        return 1

    assert await asyncio.gather(*(h.wl.run(h.principal, noop, shared=True, items=200) for _ in range(3))) == [1] * 3
    assert shared.grouped == 0


async def test_a_batch_large_enough_to_go_as_one_statement_keeps_every_value_as_given(h: Harness) -> None:
    # From ``MANY_AS_ONE_FROM`` rows a write goes to SQLite as one statement over a JSON array: text that
    # looks like JSON or NULL, JSON nulls, big numbers, flags and instants must come back as they were given.
    count = fast.MANY_AS_ONE_FROM
    values: list[Any] = [None, {"texts": AWKWARD, "n": 2**53, "x": 1.5, "ok": False}, [None, {"deep": ["NULL"]}], "t"]
    given = [
        NewTask(
            title=AWKWARD[i % len(AWKWARD)] or "empty",
            queue="values",
            data=values[i % len(values)],
            metadata={"i": i, "none": None},
            description=AWKWARD[(i + 1) % len(AWKWARD)],
            priority=("low", "medium", "high", "urgent")[i % 4],
            draft=i % 7 == 0,
        )
        for i in range(count)
    ]
    made = await created_as_given(h, given)
    for new, task in zip(given, made, strict=True):
        created = (await h.timeline(task.id))[0]
        assert (created.type, created.payload["title"], created.payload["draft"]) == (
            "task.created",
            new.title,
            new.draft,
        )

    claims = await h.claim("values", limit=count)
    items = [(c.run.id, c.claim_token, values[i % len(values)]) for i, c in enumerate(claims)]
    outcomes = await h.do(lambda u: runs.complete_many(u, items))
    assert all(isinstance(o, Run) and o.status == "completed" for o in outcomes)
    for claim, (_, _, result) in zip(claims, items, strict=True):
        task = await h.task(claim.task.id)
        assert (task.status, task.output, task.closed_at) == ("completed", result, h.clock.now())
