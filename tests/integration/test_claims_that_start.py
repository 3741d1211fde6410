"""Claims that start their runs (``start``): a worker that begins its handlers as its claims arrive has its
runs go straight to running in the claim itself, as a ``start`` right after would leave them, with the same
events in the same order: one call and one write of each run fewer. Every way of claiming takes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import WORKER, Harness, until
from test_shared_commits import together

from workloom.domain.actors import Actor
from workloom.domain.models import Claim, Run
from workloom.engine import runs

CLAIMED = ["task.created", "task.ready", "run.queued", "run.claimed", "task.in_progress"]
STARTED = [*CLAIMED, "run.started"]


async def claim(
    h: Harness, queue: str, *, limit: int = 1, start: bool = True, worker: Actor = WORKER, wait: float = 0
) -> list[Claim]:
    """``Harness.claim``, starting its runs unless told not to."""
    return await h.claim(queue, limit=limit, worker=worker, start=start, wait_seconds=wait)


async def assert_started(h: Harness, claim: Claim, history: list[str] = STARTED) -> None:
    """The claim says its run is running, and so do the run's row and the task's history (numbered 1, 2, …,
    run.started last, its payload as a ``start``'s)."""
    assert (claim.run.status, claim.run.started_at) == ("running", h.clock.now())
    stored = await h.run(claim.run.id)
    assert (stored.status, stored.started_at, stored.claimed_at) == ("running", h.clock.now(), h.clock.now())
    events = await h.timeline(claim.task.id)
    assert [e.type for e in events] == history
    assert [e.task_sequence for e in events] == list(range(1, len(events) + 1))
    started = events[-1]
    assert started.run_id == claim.run.id and started.actor == claim.run.claimed_by
    assert started.payload == {"from_status": "claimed", "status": "running", "attempt": claim.run.attempt}
    assert (await h.task(claim.task.id)).event_sequence == len(events)


async def test_a_claim_that_starts_leaves_its_runs_running_with_a_start_s_event(h: Harness) -> None:
    for i in range(3):
        await h.create(f"job {i}", queue="go")

    claims = await claim(h, "go", limit=3)

    assert len(claims) == 3
    for c in claims:
        await assert_started(h, c)
    # A start sent anyway (an older worker) gives the run back as it is, and records nothing more.
    again = await h.do(lambda u: runs.start_many(u, [(c.run.id, c.claim_token) for c in claims]))
    assert [r.status for r in again if isinstance(r, Run)] == ["running"] * 3
    assert (await h.event_types(claims[0].task.id)) == STARTED
    # The run is held as any other: heartbeats renew it, a completion ends it.
    assert (await h.heartbeat(claims[0])).status == "running"
    assert (await h.complete(claims[0], {"ok": True})).status == "completed"


async def test_a_claim_without_start_is_as_before(h: Harness) -> None:
    await h.create("job", queue="go")

    (c,) = await claim(h, "go", start=False)

    assert (c.run.status, c.run.started_at) == ("claimed", None)
    assert (await h.run(c.run.id)).status == "claimed"
    assert await h.event_types(c.task.id) == CLAIMED


async def test_a_completion_s_next_claim_starts_its_run(h: Harness) -> None:
    for i in range(3):
        await h.create(f"job {i}", queue="loop")
    (held,) = await claim(h, "loop")

    # One at a time (a worker's loop: on PostgreSQL the completion and the claim are one statement)...
    done, (next_one,) = await h.do(
        lambda u: runs.complete_and_claim(u, held.run.id, held.claim_token, None, None, 1, None, True)
    )
    assert done.status == "completed"
    await assert_started(h, next_one)

    # ... and in a batch.
    outcomes, (last,) = await h.do(
        lambda u: runs.complete_many_and_claim(
            u, [(next_one.run.id, next_one.claim_token, None)], "loop", WORKER, 5, None, True
        )
    )
    assert [o.status for o in outcomes if isinstance(o, Run)] == ["completed"]
    await assert_started(h, last)


async def test_completions_taken_together_claim_for_each_worker_as_it_asked(h: Harness) -> None:
    for i in range(8):
        await h.create(f"job {i}", queue="loop")
    workers = [Actor("agent_session", f"w{i}") for i in range(4)]
    held = [(await claim(h, "loop", worker=w, start=False))[0] for w in workers]

    def completion(c: Claim, start: bool) -> runs.Completion:
        return runs.Completion(c.run.id, c.claim_token, None, claim_next=1, start=start)

    done: list[Any] = await together(h, [completion(c, start=i % 2 == 0) for i, c in enumerate(held)])

    for i, outcome in enumerate(done):
        assert isinstance(outcome, tuple), outcome
        (next_one,) = outcome[1]
        assert next_one.run.claimed_by == workers[i]
        if i % 2 == 0:
            await assert_started(h, next_one)
        else:
            assert (await h.run(next_one.run.id)).status == "claimed"
            assert await h.event_types(next_one.task.id) == CLAIMED


async def test_a_waiting_claimer_that_starts_is_handed_a_new_task_running(h: Harness) -> None:
    await h.queue("lp")
    waiting = asyncio.create_task(claim(h, "lp", wait=10))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)  # its offer is open: the create hands it the task

    created = await h.create("handed", queue="lp")
    (handed,) = await asyncio.wait_for(waiting, 10)

    assert handed.task.id == created.id and created.status == "in_progress"
    await assert_started(h, handed)


async def test_a_claim_of_one_run_or_the_workspace_s_next_can_start_it(h: Harness) -> None:
    first = await h.create("first", queue="one")
    await h.create("second", queue="other")
    (queued,) = await h.runs(first.id)

    by_id = await h.do(lambda u: runs.claim_run(u, queued.id, WORKER, None, start=True))
    await assert_started(h, by_id)

    nxt = await h.do(lambda u: runs.claim_next(u, WORKER, start=True))
    assert nxt is not None and nxt.task.title == "second"
    await assert_started(h, nxt)


async def test_a_retry_claimed_before_its_timer_fired_starts_after_its_task_is_ready_again(h: Harness) -> None:
    await h.queue("retry", initial_interval_seconds=5, backoff_coefficient=1.0)
    task = await h.create("flaky", queue="retry", max_attempts=3)
    (first,) = await claim(h, "retry", start=False)
    await h.fail(first, "boom")
    h.clock.advance(6)  # the retry's run is claimable; the ticker has not fired the task's timer yet

    (again,) = await claim(h, "retry")

    assert again.run.attempt == 2 and again.task.status == "in_progress"
    stored = await h.run(again.run.id)
    assert (stored.status, stored.started_at) == ("running", h.clock.now())
    events = await h.timeline(task.id)
    assert [e.type for e in events][-4:] == ["run.claimed", "task.ready", "task.in_progress", "run.started"]
    assert [e.task_sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("start", [True, False])
async def test_a_claim_of_an_empty_queue_claims_nothing_whether_it_starts_or_not(h: Harness, start: bool) -> None:
    await h.queue("empty")
    assert await claim(h, "empty", limit=5, start=start) == []
