"""Hand-off: a task created while a claimer waits on its queue is claimed for that claimer in the create's
own commit, and the claimer answered once it has committed; what is not committed is never handed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
import pytest
from harness import WORKER, Harness, until
from test_hot_paths import POSTGRES_ONLY, counting_after_a_warm_queue

from workloom.domain.errors import Conflict, Forbidden
from workloom.domain.models import Claim, Task
from workloom.domain.queries import ListQuery
from workloom.engine import tasks
from workloom.engine.handoff import Offer
from workloom.engine.sealing import seal
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey, Unit
from workloom.store import idempotency as idempotency_store
from workloom.store.database import plain_url
from workloom.store.fast import write_all


@pytest.fixture(autouse=True)
def no_poll(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting claimer looks again only when woken: once its offer is seen open, it stays open."""
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)


CREATED_AND_HANDED = ["task.created", "task.ready", "run.queued", "run.claimed", "task.in_progress"]


def waiting_claim(
    h: Harness,
    *,
    limit: int = 1,
    give_up: Callable[[], Awaitable[bool]] | None = None,
    idempotency: IdempotencyKey | None = None,
    wait_seconds: float = 10,
) -> asyncio.Task[list[Claim]]:
    async def claim() -> list[Claim]:
        _, found = await h.wl.claim(
            h.principal,
            "lp",
            WORKER,
            limit=limit,
            lease_seconds=None,
            wait_seconds=wait_seconds,
            render=lambda claims: (200, list(claims)),
            idempotency=idempotency,
            give_up=give_up,
        )
        return list(found)

    return asyncio.create_task(claim())


def offers(h: Harness) -> int:
    return h.wl.runner.handoffs.waiting


async def test_a_task_created_while_a_claimer_waits_is_claimed_for_it_in_the_same_commit(h: Harness) -> None:
    await h.queue("lp")
    claimer = waiting_claim(h)
    await until(lambda: offers(h) == 1)

    created = await h.create("awaited", queue="lp")

    assert created.status == "in_progress"  # the create's own answer: claimed as it committed
    async with asyncio.timeout(10):
        claims = await claimer
    assert [c.task.id for c in claims] == [created.id]
    claim = claims[0]
    assert (claim.task.number, claim.run.status, claim.run.claimed_by, claim.run.queue) == (1, "claimed", WORKER, "lp")
    stored = await h.run(claim.run.id)
    assert (stored.status, stored.claimed_by, stored.lease_until) == ("claimed", WORKER, claim.lease_until)
    assert (await h.task(created.id)).status == "in_progress"
    assert await h.event_types(created.id) == CREATED_AND_HANDED
    timeline = await h.timeline(created.id)
    assert [e.task_sequence for e in timeline] == [1, 2, 3, 4, 5]
    assert timeline[3].actor == WORKER and timeline[3].payload["attempt"] == 1
    # The token handed over is the run's: it completes it, and a wrong one is refused.
    assert (await h.complete(claim, {"ok": True})).status == "completed"
    assert (await h.task(created.id)).status == "completed"
    assert offers(h) == 0


def claim_attempts(h: Harness) -> float:
    """Claims made by claimers themselves: each a transaction that looks at the queue."""
    return h.wl.metrics.registry.get_sample_value("workloom_claim_latency_seconds_count") or 0.0


async def test_a_claimer_handed_its_task_sends_no_other_claimer_to_look_at_the_queue(h: Harness) -> None:
    await h.queue("lp")
    first = waiting_claim(h)
    await until(lambda: offers(h) == 1)
    second = waiting_claim(h)
    await until(lambda: offers(h) == 2)
    before = claim_attempts(h)

    created = await h.create("for the first", queue="lp")
    async with asyncio.timeout(10):
        assert [c.task.id for c in await first] == [created.id]
    assert h.wl.signals.claimers == 1  # the second still waits for a wake-up: none was passed on to it
    later = await h.create("for the second", queue="lp")
    async with asyncio.timeout(10):
        assert [c.task.id for c in await second] == [later.id]

    # The creates offered their tasks and left nothing claimable: a wake-up passed on from the first
    # would only have sent the second to look at an empty queue (a transaction for nothing).
    assert claim_attempts(h) == before
    assert (created.status, later.status) == ("in_progress", "in_progress")


@POSTGRES_ONLY
@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
async def test_what_a_create_that_hands_its_task_over_costs_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch, keyed: bool
) -> None:
    trips = await counting_after_a_warm_queue(h, monkeypatch, "lp")
    assert len(await h.claim("lp", limit=2)) == 2  # the warm-up's two tasks: the queue is empty again
    claimer = waiting_claim(h, idempotency=IdempotencyKey("lp-1", b"claim lp") if keyed else None)
    await until(lambda: offers(h) == 1)

    trips.on = True
    created = await h.create("handed", queue="lp")
    trips.on = False

    assert created.status == "in_progress" and [c.task.id for c in await claimer] == [created.id]
    # The number reserved (on a connection of its own), then task, run claimed and events in one statement
    # sent without BEGIN; keyed, the claimer's answer too, that statement taking the key's lock and looking
    # for an answer under it (migration 0006; it was BEGIN, the lock and the look, the two, and COMMIT).
    assert trips.sent == ["UPDATE", "WITH"]
    if keyed:
        assert await h.wl.runner.answered(h.principal.workspace_id, IdempotencyKey("lp-1", b"claim lp"))


async def test_a_claimer_waiting_for_three_takes_three_of_a_batch_and_the_rest_stay_queued(h: Harness) -> None:
    await h.queue("lp")
    claimer = waiting_claim(h, limit=3)
    await until(lambda: offers(h) == 1)

    made = await h.do(lambda u: tasks.create_many(u, [NewTask(title=f"t{i}", queue="lp") for i in range(5)]))

    assert [t.status for t in made] == ["in_progress"] * 3 + ["ready"] * 2
    claims = await claimer
    assert [c.task.title for c in claims] == ["t0", "t1", "t2"]
    assert sorted(c.task.title for c in await h.claim("lp", limit=5)) == ["t3", "t4"]


async def test_a_claimer_whose_caller_left_is_handed_nothing_and_the_task_waits_for_the_next(h: Harness) -> None:
    await h.queue("lp")

    async def gone() -> bool:
        return True

    claimer = waiting_claim(h, give_up=gone)
    await until(lambda: offers(h) == 1)

    created = await h.create("for someone listening", queue="lp")

    assert created.status == "ready"
    assert await claimer == []
    later = await h.claim("lp")
    assert [c.task.id for c in later] == [created.id]


async def test_a_create_that_rolls_back_hands_nothing_and_the_claimer_takes_the_next_one(h: Harness) -> None:
    await h.queue("lp")
    claimer = waiting_claim(h)
    await until(lambda: offers(h) == 1)

    async def create_then_fail(u: Unit) -> Task:
        await tasks.create(u, NewTask(title="never", queue="lp"))
        raise Conflict("refused after the hand-off was made")

    with pytest.raises(Conflict):
        await h.do(create_then_fail)
    assert offers(h) == 1  # open again: the claim was never committed
    created = await h.create("this one", queue="lp")

    async with asyncio.timeout(10):
        claims = await claimer
    assert [c.task.id for c in claims] == [created.id]
    assert [t.title for t in (await h.list(_all())).items] == ["this one"]


async def test_a_shared_commit_rolled_back_hands_over_again_when_its_calls_run_alone(h: Harness) -> None:
    await h.queue("lp")
    claimer = waiting_claim(h)
    await until(lambda: offers(h) == 1)

    async def fails_late(u: Unit) -> Task:
        await tasks.create(u, NewTask(title="never"))
        await u.flush()  # written, in the shared transaction: the whole group rolls back
        raise Conflict("refused after writing")

    calls = [lambda u: tasks.create(u, NewTask(title="handed", queue="lp")), fails_late]
    made = await asyncio.gather(*(h.wl.run(h.principal, op, shared=True) for op in calls), return_exceptions=True)

    assert isinstance(made[1], Conflict)
    assert isinstance(made[0], Task) and made[0].status == "in_progress"
    async with asyncio.timeout(10):
        claims = await claimer
    assert [c.task.id for c in claims] == [made[0].id]
    assert await h.event_types(made[0].id) == CREATED_AND_HANDED


async def test_a_claimer_whose_wait_ends_while_a_create_holds_its_offer_gets_what_that_create_commits(
    h: Harness,
) -> None:
    queue = await h.queue("lp")
    claimer = waiting_claim(h)
    await until(lambda: offers(h) == 1)
    held: list[Offer] = []
    go_on = asyncio.Event()

    async def create_slowly(u: Unit) -> Task:
        task = await tasks.create(u, NewTask(title="slow", queue="lp"))
        held.extend(u.offers)
        await go_on.wait()  # the claimer's wait ends meanwhile
        return task

    creating = asyncio.create_task(h.do(create_slowly))
    await until(lambda: bool(held))
    h.wl.signals.notify([f"queue:{queue.id}"])  # ends its wait (as a wake-up for other work would)
    await until(lambda: held[0].withdrawn)
    assert not claimer.done()  # it waits for the create's outcome rather than answer without it
    go_on.set()
    created = await creating

    async with asyncio.timeout(10):
        claims = await claimer
    assert [c.task.id for c in claims] == [created.id]


async def test_a_claimer_waiting_under_an_idempotency_key_is_handed_the_task_and_its_answer_kept_under_it(
    h: Harness,
) -> None:
    key, claimer = await waiting_under_a_key(h, "claim-1")

    created = await h.create("for a keyed claimer", queue="lp")

    assert created.status == "in_progress"
    async with asyncio.timeout(10):
        claims = await claimer
    assert [c.task.id for c in claims] == [created.id]
    assert (await h.run(claims[0].run.id)).idempotency_key == "claim-1"  # the claimer's key, as its claim keeps it
    # A retry of the claim (its answer lost on the way, say) gets the same run and token back, claims nothing.
    await h.create("for the next claim", queue="lp")
    _, replayed = await h.wl.claim(
        h.principal, "lp", WORKER, limit=1, lease_seconds=None, wait_seconds=0,
        render=lambda found: (200, list(found)), idempotency=key,
    )  # fmt: skip
    assert [(c["run"]["id"], c["claim_token"]) for c in replayed] == [(claims[0].run.id, claims[0].claim_token)]
    assert offers(h) == 0


async def test_a_keyed_claimer_whose_key_was_answered_meanwhile_is_passed_over_and_gets_that_answer(
    h: Harness,
) -> None:
    key, claimer = await waiting_under_a_key(h, "claim-2")
    # Meanwhile a retry of the same claim was answered (elsewhere): its answer is stored under the key.
    answered = [{"run": {"id": "r_elsewhere"}, "claim_token": "from the retry"}]
    await h.do(lambda u: _store_answer(u, key, answered))

    created = await h.create("not for a key answered already", queue="lp")

    assert created.status == "ready"  # passed over: two answers under one key would be one too many
    async with asyncio.timeout(10):
        found = await claimer  # woken by the create, it finds the retry's answer under its key
    assert found == answered
    assert [c.task.id for c in await h.claim("lp")] == [created.id]


@POSTGRES_ONLY
async def test_a_keyed_claimer_whose_key_is_in_use_elsewhere_is_passed_over_without_the_create_waiting(
    h: Harness,
) -> None:
    key, claimer = await waiting_under_a_key(h, "claim-busy")
    # A retry of the same claim, on another server, holds the key's lock while it runs.
    elsewhere = await asyncpg.connect(plain_url(h.wl.db.url))
    try:
        await elsewhere.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", f"{h.principal.workspace_id}:{key.key_hash}"
        )
        async with asyncio.timeout(10):
            created = await h.create("not for a key in use", queue="lp")  # passed over, not held back
        assert created.status == "ready"
        assert offers(h) == 0  # the claimer was told to look again, under its key: it waits for the lock
    finally:
        await elsewhere.close()  # the retry ended without an answer: the claimer's look claims the task
    async with asyncio.timeout(10):
        assert [c.task.id for c in await claimer] == [created.id]


async def test_two_claimers_waiting_under_one_key_are_not_both_handed_a_task(h: Harness) -> None:
    key, first = await waiting_under_a_key(h, "claim-3")
    again = waiting_claim(h, idempotency=key)  # the same claim, retried while the first still waits
    await until(lambda: offers(h) == 2)

    made = await h.do(lambda u: tasks.create_many(u, [NewTask(title=f"t{i}", queue="lp") for i in range(2)]))

    assert [t.status for t in made] == ["in_progress", "ready"]
    async with asyncio.timeout(10):
        handed, replayed = await first, await again
    assert [c.task.id for c in handed] == [made[0].id]
    assert [c["run"]["id"] for c in replayed] == [handed[0].run.id]  # the retry gets the first answer


async def waiting_under_a_key(h: Harness, key: str) -> tuple[IdempotencyKey, asyncio.Task[list[Claim]]]:
    """A claim of queue ``lp`` under an idempotency key, seen waiting with its offer open."""
    await h.queue("lp")
    idempotency = IdempotencyKey(key, b"POST /v1/queues/lp/claim")
    claimer = waiting_claim(h, idempotency=idempotency)
    await until(lambda: offers(h) == 1)
    return idempotency, claimer


async def _store_answer(u: Unit, key: IdempotencyKey, body: object) -> None:
    sealed = seal(key.key, orjson.dumps(body))
    await write_all(
        u.conn,
        [idempotency_store.idempotency_write(u.workspace_id, key.key_hash, key.request_hash, 200, sealed, u.now)],
    )


async def test_no_offer_crosses_workspaces(h: Harness) -> None:
    await h.queue("lp")
    claimer = waiting_claim(h)
    await until(lambda: offers(h) == 1)
    other = await h.other_workspace("elsewhere")
    await other.queue("lp")

    theirs = await other.create("theirs", queue="lp")

    assert theirs.status == "ready"
    assert offers(h) == 1
    ours = await h.create("ours", queue="lp")
    assert [c.task.id for c in await claimer] == [ours.id]


def _all() -> ListQuery:
    return ListQuery(limit=100)


def waiting_claim_next(h: Harness, queues: list[str] | None) -> asyncio.Task[Claim | None]:
    async def claim() -> Claim | None:
        _, found = await h.wl.claim_next(
            h.principal, WORKER, queues=queues, wait_seconds=10, render=lambda claim: (200, claim)
        )
        return found  # type: ignore[no-any-return]

    return asyncio.create_task(claim())


async def test_a_claim_next_waiting_on_any_queue_is_handed_a_task_of_any_of_them(h: Harness) -> None:
    await h.queue("a")
    claimer = waiting_claim_next(h, None)
    await until(lambda: offers(h) == 1)

    created = await h.create("anywhere", queue="b")

    assert created.status == "in_progress"
    claim = await claimer
    assert claim is not None and (claim.task.id, claim.run.queue) == (created.id, "b")


async def test_a_claim_next_waiting_on_named_queues_is_handed_only_their_tasks(h: Harness) -> None:
    await h.queue("a")
    await h.queue("b")
    claimer = waiting_claim_next(h, ["a"])
    await until(lambda: offers(h) == 1)

    elsewhere = await h.create("not for it", queue="b")
    assert elsewhere.status == "ready" and offers(h) == 1
    created = await h.create("for it", queue="a")

    assert created.status == "in_progress"
    claim = await claimer
    assert claim is not None and claim.task.id == created.id


async def test_a_key_that_may_not_work_runs_is_refused_before_it_waits_or_is_handed_anything(h: Harness) -> None:
    await h.queue("lp")
    assert await h.claim("lp") == []  # the queue seen empty: a long-poll would wait without looking
    observer = dataclasses.replace(h.principal, role="observer")  # a role granted nothing

    with pytest.raises(Forbidden):
        async with asyncio.timeout(5):  # refused at once, not after waiting (and maybe being handed work)
            await h.wl.claim(
                observer, "lp", WORKER, limit=1, lease_seconds=None, wait_seconds=30, render=lambda c: (200, c)
            )
    with pytest.raises(Forbidden):
        await h.wl.claim_next(observer, WORKER, wait_seconds=10, render=lambda c: (200, c))
    assert offers(h) == 0
