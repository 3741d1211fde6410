"""Long-poll claims: a caller who leaves while its claim is being made gets nothing claimed for it."""

from __future__ import annotations

import asyncio

from harness import WORKER, Harness

from workloom.engine.unit import IdempotencyKey


async def _create_once_waiting(h: Harness, title: str) -> None:
    """Create the task once a long-poll claimer is waiting on the queue (an observable condition, bounded)."""
    async with asyncio.timeout(10):
        while h.wl.signals.waiting == 0:  # noqa: ASYNC110 (no event to await: poll the count, bounded)
            await asyncio.sleep(0.01)
    await h.create(title, queue="lp")


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
        # Under a key, so that it is woken to claim for itself rather than handed the task by its create
        # (test_handoff.py has the caller gone at a hand-off).
        idempotency=IdempotencyKey("lp-1", b"claim lp"),
        give_up=give_up,
    )
    (_, claims), _ = await asyncio.gather(claim, _create_once_waiting(h, "for someone listening"))
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
