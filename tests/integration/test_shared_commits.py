"""Shared commits: calls of the hot paths that arrive together share one transaction, and each stays atomic.

Calls started in the same turn of the event loop all wait for the first group, so a ``gather`` of them
is one group (the first drainer takes everyone waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from harness import Harness
from test_hot_paths import POSTGRES_ONLY, RoundTrips, counting_after_a_warm_queue

from workloom.domain.actors import Actor
from workloom.domain.errors import Conflict, IdempotencyMismatch, StaleClaim, ValidationFailed
from workloom.domain.models import Claim, Run, Task
from workloom.domain.queries import ListQuery
from workloom.engine import runs, tasks
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey, Unit
from workloom.store import numbers

T = TypeVar("T")


async def together(h: Harness, ops: list[Callable[[Unit], Awaitable[T]]]) -> list[T | BaseException]:
    """Run ``ops`` as shared calls started at once; each one's result or error, in order."""
    return await asyncio.gather(*(h.wl.run(h.principal, op, shared=True) for op in ops), return_exceptions=True)


def create(title: str, **fields: Any) -> Callable[[Unit], Awaitable[Task]]:
    return lambda u: tasks.create(u, NewTask(title=title, **fields))


def grouped(h: Harness) -> int:
    assert h.wl.runner.shared is not None
    return h.wl.runner.shared.grouped


async def test_creates_arriving_together_commit_once_numbered_in_arrival_order(h: Harness) -> None:
    await h.create("before", queue="inbox")
    made = await together(h, [create(f"t{i}", queue="inbox", data={"i": i}) for i in range(8)])

    assert grouped(h) == 8
    observed = h.wl.metrics.registry.get_sample_value
    assert (observed("workloom_shared_commit_calls_count"), observed("workloom_shared_commit_calls_sum")) == (1, 8)
    assert all(isinstance(t, Task) for t in made)
    created = [t for t in made if isinstance(t, Task)]
    assert [t.number for t in created] == list(range(2, 10))  # one reservation, in the order they came
    for i, task in enumerate(created):
        stored = await h.task(task.id)
        assert (stored.title, stored.data, stored.number, stored.status) == (f"t{i}", {"i": i}, i + 2, "ready")
        assert await h.event_types(task.id) == ["task.created", "task.ready", "run.queued"]
    claimed = await h.claim("inbox", limit=10)
    assert sorted(c.task.title for c in claimed) == sorted(["before", *(f"t{i}" for i in range(8))])


@POSTGRES_ONLY
async def test_creates_arriving_together_are_one_reservation_and_one_statement_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = await counting_after_a_warm_queue(h, monkeypatch, "inbox")

    trips.on = True
    made = await together(h, [create(f"t{i}", queue="inbox") for i in range(8)])
    trips.on = False

    # Eight numbers reserved at once (on a connection of its own), then eight tasks, their runs and their
    # 24 events in one statement, which is the whole transaction (alone one create costs the same two).
    assert trips.sent == ["UPDATE", "WITH"]
    assert sorted(t.number for t in made if isinstance(t, Task)) == list(range(3, 11))


@POSTGRES_ONLY
async def test_creates_under_load_take_numbers_reserved_ahead_so_a_group_waits_on_no_reservation(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Under load" whatever this machine's speed: every create of the test falls in one window.
    monkeypatch.setattr(numbers, "WINDOW_SECONDS", 600.0)
    trips = await counting_after_a_warm_queue(h, monkeypatch, "inbox")

    trips.on = True
    made: list[Task | BaseException] = []
    for group in range(5):
        made += await together(h, [create(f"g{group}.{i}", queue="inbox") for i in range(8)])
    trips.on = False

    # Five groups, five statements; the numbers of the later groups were reserved ahead, a few at a time in
    # the background (one reservation a group before, five).
    assert trips.sent.count("WITH") == 5
    assert trips.sent.count("UPDATE") <= 3, trips.sent
    created = [t for t in made if isinstance(t, Task)]
    assert [t.number for t in created] == list(range(3, 43))  # in the order they came, no gap
    stored = {t.id: t.number for t in (await h.list(ListQuery(limit=100))).items}
    assert [stored[t.id] for t in created] == list(range(3, 43))


async def _held(h: Harness, count: int) -> list[Claim]:
    """``count`` runs claimed, each by a worker of its own, and ``count`` more tasks waiting behind them."""
    for i in range(2 * count):
        await h.create(f"job {i}", queue="loop")
    return [await h.claim_one("loop", worker=Actor("agent_session", f"w{i}")) for i in range(count)]


async def test_completions_arriving_together_each_complete_and_claim_their_next(h: Harness) -> None:
    held = await _held(h, 6)

    done = await together(
        h,
        [
            (lambda u, c=c: runs.complete_and_claim(u, c.run.id, c.claim_token, {"by": c.run.id}, None, 1, None))
            for c in held
        ],
    )

    assert grouped(h) == 6
    for claim in await _each_completed_with_its_next(h, held, done):
        assert (await h.task(claim.task.id)).status == "in_progress"


async def _each_completed_with_its_next(h: Harness, held: list[Claim], done: list[Any]) -> list[Claim]:
    """Checks that each of ``held`` was completed and its worker given one next run; those next claims."""
    next_claims: list[Claim] = []
    for claim, outcome in zip(held, done, strict=True):
        assert isinstance(outcome, tuple), outcome
        run, claimed = outcome
        assert run.status == "completed" and len(claimed) == 1
        assert claimed[0].run.claimed_by == claim.run.claimed_by  # the next one goes to the same worker
        next_claims.extend(claimed)
        task = await h.task(claim.task.id)
        assert task.status == "completed" and task.output == {"by": claim.run.id}
        assert (await h.event_types(task.id))[-2:] == ["run.completed", "task.completed"]
    assert len({c.task.id for c in next_claims}) == len(held)  # different tasks, none of them twice
    for claim in next_claims:
        assert (await h.event_types(claim.task.id))[-2:] == ["run.claimed", "task.in_progress"]
    return next_claims


async def test_the_same_run_completed_twice_in_one_group_is_completed_once(h: Harness) -> None:
    (claim,) = await _held(h, 1)
    complete = lambda u: runs.complete(u, claim.run.id, claim.claim_token, {"n": 1})  # noqa: E731

    first, second = await together(h, [complete, complete])

    # One serial order: the second call finds the run completed by the first and is refused as a repeat.
    assert isinstance(first, Run) and first.status == "completed"
    assert isinstance(second, StaleClaim)
    assert (await h.event_types(claim.task.id)).count("task.completed") == 1


async def test_a_call_refused_before_it_used_the_database_leaves_the_others_to_commit(h: Harness) -> None:
    async def refused(_u: Unit) -> Task:
        raise Conflict("refused before anything was read or written")

    made = await together(h, [create("a"), refused, create("b")])

    assert isinstance(made[1], Conflict)
    assert grouped(h) == 2  # the other two still committed together
    assert [(await h.task(t.id)).title for t in made if isinstance(t, Task)] == ["a", "b"]


async def test_a_call_that_fails_after_writing_takes_its_writes_back_and_the_others_commit(h: Harness) -> None:
    async def fails_late(u: Unit) -> Task:
        await tasks.create(u, NewTask(title="never"))
        await u.flush()  # written, in the shared transaction
        raise Conflict("refused after writing")

    made = await together(h, [create("a"), fails_late, create("b")])

    assert isinstance(made[1], Conflict)
    # The group was rolled back and each call ran again on its own: none of it was grouped in the end.
    assert grouped(h) == 0
    titles = [t.title for t in (await h.list(_all())).items]
    assert sorted(titles) == ["a", "b"]


async def test_idempotent_calls_in_one_group_keep_their_own_answers(h: Harness) -> None:
    def keyed(title: str, key: str) -> Awaitable[Any]:
        return h.wl.respond(
            h.principal,
            create(title),
            lambda t: (201, {"id": t.id, "number": t.number}),
            IdempotencyKey(key, f"POST /v1/tasks {title}".encode()),
            shared=True,
        )

    first = await asyncio.gather(keyed("a", "key-a"), keyed("b", "key-b"), keyed("c", "key-c"))
    assert grouped(h) == 3
    assert sorted(body["number"] for _, body in first) == [1, 2, 3]  # numbered before the answers were kept

    again = await asyncio.gather(keyed("a", "key-a"), keyed("b", "key-b"), keyed("c", "key-c"))
    assert again == first
    assert (await h.list(_all())).total == 3


async def test_the_same_key_twice_at_once_is_done_once_and_both_get_its_answer(h: Harness) -> None:
    def keyed() -> Awaitable[Any]:
        return h.wl.respond(
            h.principal,
            create("once"),
            lambda t: (201, {"id": t.id}),
            IdempotencyKey("twice-at-once", b"POST /v1/tasks once"),
            shared=True,
        )

    first, second = await asyncio.gather(keyed(), keyed())

    assert first == second
    assert (await h.list(_all())).total == 1
    # Not in one group (where the second would not see the first's answer, stored at its end): one after
    # the other, the second given the first's answer.
    assert grouped(h) == 0


async def test_a_completion_sent_twice_at_once_under_its_key_gets_one_answer_twice(h: Harness) -> None:
    held = await _held(h, 2)

    done = await asyncio.gather(
        keyed_completion(h, held[0], "sent-twice"),
        keyed_completion(h, held[1], "other"),
        keyed_completion(h, held[0], "sent-twice"),
    )

    assert done[0] == done[2] and done[0][1]["status"] == "completed"
    assert done[1][1]["status"] == "completed"


def _all() -> ListQuery:
    return ListQuery(count=True, limit=100)


# -- completions of one kind taken together (``Completion.each``) ----------------------------------------


def completion(claim: Claim, claim_next: int = 1, token: str | None = None) -> runs.Completion:
    return runs.Completion(claim.run.id, token or claim.claim_token, {"by": claim.run.id}, claim_next=claim_next)


async def test_completions_arriving_together_run_as_one_and_hand_each_worker_its_own_next(h: Harness) -> None:
    held = await _held(h, 6)

    done = await together(h, [completion(c) for c in held])

    assert grouped(h) == 6
    next_claims = await _each_completed_with_its_next(h, held, done)
    assert len({c.claim_token.split(".")[0] for c in next_claims}) == 6  # a secret of its own for each worker
    for claim in next_claims:
        stored = await h.run(claim.run.id)
        assert stored.claimed_by == claim.run.claimed_by and stored.status == "claimed"
        assert (await h.heartbeat(claim)).status == "claimed"  # its token holds its run
    other = next_claims[1]
    with pytest.raises(StaleClaim):  # and no other
        await h.do(lambda u: runs.heartbeat(u, other.run.id, next_claims[0].claim_token, None))


async def test_completions_together_with_fewer_runs_waiting_than_workers_claim_what_there_is(h: Harness) -> None:
    for i in range(4):
        await h.create(f"job {i}", queue="loop")
    held = [await h.claim_one("loop", worker=Actor("agent_session", f"w{i}")) for i in range(3)]

    done = await together(h, [completion(c) for c in held])

    claimed = [outcome[1] for outcome in done if isinstance(outcome, tuple)]
    assert sorted(len(c) for c in claimed) == [0, 0, 1]  # the one task left goes to the first in line
    assert claimed[0][0].run.claimed_by == held[0].run.claimed_by


async def test_one_refused_completion_among_others_is_refused_alone(h: Harness) -> None:
    held = await _held(h, 3)
    expiring = await h.claim_one("loop", lease_seconds=5, worker=Actor("agent_session", "slow"))
    h.clock.advance(10)  # its lease ran out; the ticker has not noticed yet

    done = await together(
        h,
        [completion(held[0]), completion(held[1], token="clm_wrong.token"), completion(expiring), completion(held[2])],
    )

    assert isinstance(done[1], StaleClaim) and isinstance(done[2], StaleClaim)
    for outcome in (done[0], done[3]):
        assert isinstance(outcome, tuple) and outcome[0].status == "completed" and len(outcome[1]) == 1
    assert (await h.task(held[1].task.id)).status == "in_progress"  # the wrong token changed nothing
    # The late result is kept and the run ended, as for a completion alone.
    assert "run.late_result" in await h.event_types(expiring.task.id)
    assert (await h.run(expiring.run.id)).end_reason == "lease_expired"


async def test_completions_without_claim_next_are_taken_together_too(h: Harness) -> None:
    held = await _held(h, 3)

    done = await together(h, [completion(c, claim_next=0) for c in held])

    assert [outcome[1] for outcome in done if isinstance(outcome, tuple)] == [[], [], []]
    assert [(await h.task(c.task.id)).status for c in held] == ["completed"] * 3


@POSTGRES_ONLY
async def test_completions_together_cost_the_same_statements_however_many_there_are(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _held(h, 11)
    trips = RoundTrips(monkeypatch)

    trips.on = True
    await together(h, [completion(c) for c in held[:2]])
    two = list(trips.sent)
    trips.sent.clear()
    await together(h, [completion(c) for c in held[2:8]])
    six = list(trips.sent)
    trips.sent.clear()
    await asyncio.gather(*(keyed_completion(h, c, f"k-{i}") for i, c in enumerate(held[8:])))
    keyed = list(trips.sent)
    trips.on = False

    # Begin; runs and tasks read and locked; all completed (with their dependents found); the next runs
    # claimed, one for each worker, with their tasks moved and every event written; commit.
    assert two == six == ["BEGIN", "SELECT", "WITH", "WITH", "COMMIT"]
    # Under keys (``Keyed.each``): the keys' locks taken and their answers looked for in one statement
    # first, and the answers stored before the commit. One after another in the group (as before
    # ``Keyed.each``), each call was a look, a read and a write of its own.
    assert keyed == ["BEGIN", "SELECT", "SELECT", "WITH", "WITH", "WITH", "COMMIT"]


async def test_batch_completions_arriving_together_are_one_batch_each_answered_for_its_own_runs(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _held(h, 5)
    batches = batch_sizes(monkeypatch, "_complete_each")
    calls = [
        runs.CompleteMany([(c.run.id, c.claim_token, {"by": c.run.id}) for c in held[:2]]),
        runs.CompleteMany([(held[2].run.id, "clm_wrong.token", None), (held[3].run.id, held[3].claim_token, None)]),
        runs.CompleteMany([(held[4].run.id, held[4].claim_token, None)] * 1001),  # more than a batch may hold
    ]

    done = await together(h, list(calls))

    assert batches == [4]  # the first two calls' items, in one batch
    first, second, too_many = done
    assert isinstance(first, list) and [r.status for r in first if isinstance(r, Run)] == ["completed"] * 2
    assert isinstance(second, list) and isinstance(second[0], StaleClaim) and isinstance(second[1], Run)
    assert isinstance(too_many, ValidationFailed)
    statuses = [(await h.task(c.task.id)).status for c in held]
    assert statuses == ["completed", "completed", "in_progress", "completed", "in_progress"]


def batch_sizes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """How many items each call of ``runs.<name>`` (a batch's own work: ``_complete_each``...) was given."""
    sizes: list[int] = []
    each = getattr(runs, name)

    async def counted(u: Unit, items: list[Any]) -> list[Any]:
        sizes.append(len(items))
        return await each(u, items)

    monkeypatch.setattr(runs, name, counted)
    return sizes


# -- keyed completions taken together (``Keyed.each``): as the SDK calls, every call under a key ------------


def keyed_completion(h: Harness, claim: Claim, key: str, token: str | None = None) -> Awaitable[Any]:
    return h.wl.respond(
        h.principal,
        completion(claim, token=token),
        lambda done: (200, {"run": done[0].id, "status": done[0].status, "claims": [c.run.id for c in done[1]]}),
        IdempotencyKey(key, f"POST /v1/runs/{claim.run.id}/complete".encode()),
        shared=True,
    )


def counting_each(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many completions each ``Completion.each`` took together, call by call."""
    sizes: list[int] = []
    each = runs.Completion.each

    async def counted(u: Unit, items: list[runs.Completion]) -> list[Any]:
        sizes.append(len(items))
        return await each(u, items)

    monkeypatch.setattr(runs.Completion, "each", staticmethod(counted))
    return sizes


async def test_keyed_completions_arriving_together_are_taken_together_each_under_its_own_key(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _held(h, 4)
    sizes = counting_each(monkeypatch)

    first = await asyncio.gather(*(keyed_completion(h, c, f"done-{i}") for i, c in enumerate(held)))

    assert grouped(h) == 4 and sizes == [4]  # one use case for the four, as unkeyed completions are
    for claim, (status, body) in zip(held, first, strict=True):
        assert status == 200 and body["run"] == claim.run.id and body["status"] == "completed"
        assert len(body["claims"]) == 1
    for i, (_, body) in enumerate(first):  # each next run records the key of the call that claimed it
        (next_run,) = body["claims"]
        assert (await h.run(next_run)).idempotency_key == f"done-{i}"

    again = await asyncio.gather(*(keyed_completion(h, c, f"done-{i}") for i, c in enumerate(held)))
    assert again == first  # each key's own answer, and nothing claimed again
    assert sizes == [4]  # given back: no completion ran
    assert len({r for _, body in first for r in body["claims"]}) == 4


async def test_a_repeated_or_reused_key_among_keyed_completions_is_answered_alone(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _held(h, 4)
    answered = await keyed_completion(h, held[0], "done-0")
    sizes = counting_each(monkeypatch)

    done = await asyncio.gather(
        keyed_completion(h, held[0], "done-0"),  # a repeat: its stored answer
        keyed_completion(h, held[1], "done-0"),  # the same key for another request: refused
        keyed_completion(h, held[2], "done-2", token="clm_wrong.token"),  # refused by the completion
        keyed_completion(h, held[3], "done-3"),
        return_exceptions=True,
    )

    assert sizes == [2]  # the two whose keys held no answer went on, together
    assert done[0] == answered
    assert isinstance(done[1], IdempotencyMismatch)
    assert isinstance(done[2], StaleClaim)
    assert isinstance(done[3], tuple) and done[3][1]["status"] == "completed"
    assert [(await h.task(c.task.id)).status for c in held] == ["completed", "in_progress", "in_progress", "completed"]
    # The refused call stored no answer: the same key, with the right token, completes.
    _, body = await keyed_completion(h, held[2], "done-2")
    assert body["status"] == "completed"


@POSTGRES_ONLY
async def test_an_idempotent_create_keeps_its_answer_in_its_last_write_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = await counting_after_a_warm_queue(h, monkeypatch, "inbox")

    trips.on = True
    status, body = await h.wl.respond(
        h.principal,
        create("kept", queue="inbox"),
        lambda t: (201, {"id": t.id, "number": t.number}),
        IdempotencyKey("key-1", b"POST /v1/tasks kept"),
        shared=True,
    )
    trips.on = False

    # The key locked and looked up in one round trip (migration 0006); the number reserved; task, run,
    # events and the sealed answer in one statement (the answer was its own INSERT after the rows were
    # written); commit.
    assert trips.sent == ["BEGIN", "SELECT", "UPDATE", "WITH", "COMMIT"]
    assert (status, body["number"]) == (201, 3)
    again = await h.wl.respond(
        h.principal,
        create("kept", queue="inbox"),
        lambda t: (201, {"id": t.id, "number": t.number}),
        IdempotencyKey("key-1", b"POST /v1/tasks kept"),
    )
    assert again == (status, body)
