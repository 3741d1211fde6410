"""Long-poll claims: a caller who leaves while its claim is being made gets nothing claimed for it, and a
long-poll at a queue just seen empty waits without looking again until work arrives."""

from __future__ import annotations

import asyncio

import pytest
from harness import WORKER, Harness, until

from workloom.domain.models import Claim
from workloom.engine import runs, tasks
from workloom.engine.unit import IdempotencyKey


async def _create_once_waiting(h: Harness, title: str) -> None:
    """Create the task once a long-poll claimer is waiting on the queue."""
    await until(lambda: h.wl.signals.waiting > 0)
    await h.create(title, queue="lp")


async def _publish_once_waiting(h: Harness, task_id: str) -> None:
    """Publish the task once the claimer waits (its offer open: it has looked, and waits to be woken)."""
    await until(lambda: h.wl.runner.handoffs.waiting > 0)
    await h.do(lambda u: tasks.publish(u, task_id))


async def test_a_caller_gone_by_the_time_its_claim_is_made_gets_nothing_and_the_task_stays(h: Harness) -> None:
    await h.queue("lp")
    answers = iter([False, True])  # still there at the wake-up's check, gone when the claim is made

    async def give_up() -> bool:
        return next(answers, True)

    claim = h.wl.claim(
        h.principal,
        "lp",
        WORKER,
        limit=1,
        lease_seconds=None,
        wait_seconds=10,
        render=lambda found: (200, list(found)),
        give_up=give_up,
    )
    # Published, not created, while it waits: woken to claim for itself rather than handed the task by its
    # create (test_handoff.py has the caller gone at a hand-off).
    draft = await h.create("for someone listening", queue="lp", draft=True)
    (_, claims), _ = await asyncio.gather(claim, _publish_once_waiting(h, draft.id))
    assert claims == []
    waiting = await h.claim("lp")  # the work stayed for the next caller
    assert [c.task.title for c in waiting] == ["for someone listening"]
    assert waiting[0].run.attempt == 1


async def test_a_caller_still_there_gets_the_work_it_waited_for(h: Harness) -> None:
    await h.queue("lp")

    async def give_up() -> bool:
        return False

    claim = h.wl.claim(
        h.principal,
        "lp",
        WORKER,
        limit=1,
        lease_seconds=None,
        wait_seconds=10,
        render=lambda found: (200, list(found)),
        give_up=give_up,
    )
    (_, claims), _ = await asyncio.gather(claim, _create_once_waiting(h, "awaited"))
    assert [c.task.title for c in claims] == ["awaited"]


# -- a queue just seen empty (``EmptyQueues``) -------------------------------------------------------------


def looks(h: Harness) -> float:
    """Claim attempts made so far: each is a transaction that looks at the queue."""
    return h.wl.metrics.registry.get_sample_value("workloom_claim_latency_seconds_count") or 0.0


def long_poll(h: Harness, wait_seconds: float = 10) -> asyncio.Task[list[Claim]]:
    async def claim() -> list[Claim]:
        _, found = await h.wl.claim(
            h.principal, "lp", WORKER, limit=1, lease_seconds=None, wait_seconds=wait_seconds,
            render=lambda claims: (200, list(claims)),
        )  # fmt: skip
        return list(found)

    return asyncio.create_task(claim())


async def test_a_worker_whose_completion_found_nothing_next_long_polls_without_looking_again(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)  # no look while it waits but a woken one
    await h.queue("lp")
    await h.create("first", queue="lp")
    claim = await h.claim_one("lp")
    _, next_claims = await h.do(runs.Completion(claim.run.id, claim.claim_token, claim_next=1))
    assert next_claims == []
    before = looks(h)

    waiting = long_poll(h)
    await until(lambda: h.wl.runner.handoffs.waiting == 1)

    assert looks(h) == before  # it went straight to waiting: the completion had just looked
    created = await h.create("second", queue="lp")
    assert [c.task.id for c in await waiting] == [created.id]


async def test_a_queue_seen_empty_is_looked_at_again_once_work_arrives(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)  # only a wake-up or a look can find the task
    await h.queue("lp")
    assert await h.claim("lp") == []  # seen empty
    created = await h.create("arrived since", queue="lp")  # its wake-up voids what was seen

    async with asyncio.timeout(10):
        claims = await long_poll(h, wait_seconds=30)

    assert [c.task.id for c in claims] == [created.id]


def keyed_long_poll(h: Harness, key: IdempotencyKey, wait_seconds: float = 10) -> asyncio.Task[list[str]]:
    """A long-poll claim under ``key``; its answer as the run ids it holds (as stored and given back)."""

    async def claim() -> list[str]:
        _, found = await h.wl.claim(
            h.principal, "lp", WORKER, limit=1, lease_seconds=None, wait_seconds=wait_seconds,
            render=lambda claims: (200, [c.run.id for c in claims]), idempotency=key,
        )  # fmt: skip
        return list(found)

    return asyncio.create_task(claim())


async def test_a_keyed_long_poll_at_a_queue_seen_empty_waits_without_a_claim_once_it_finds_no_stored_answer(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)
    await h.queue("lp")
    assert await h.claim("lp") == []  # seen empty
    before = looks(h)

    waiting = keyed_long_poll(h, IdempotencyKey("lp-2", b"claim lp"))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)

    assert looks(h) == before  # no claim attempt: only a read for a stored answer
    created = await h.create("for the keyed", queue="lp")
    assert await waiting == [run.id for run in await h.runs(created.id)]


async def test_a_repeated_keyed_long_poll_at_a_queue_seen_empty_gets_its_stored_answer_at_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)  # waiting, it would answer only after 30 s
    await h.queue("lp")
    await h.create("claimed under the key", queue="lp")
    key = IdempotencyKey("lp-3", b"claim lp")
    first = await keyed_long_poll(h, key)
    assert len(first) == 1
    assert await h.claim("lp") == []  # seen empty

    async with asyncio.timeout(5):
        repeated = await keyed_long_poll(h, key, wait_seconds=30)

    assert repeated == first
