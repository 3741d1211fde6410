"""Leases, retries and fencing, driven by the manual clock and the ticker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workloom.domain.errors import StaleClaim


@pytest.fixture
async def q(h):
    """Leases of 10 s, three attempts, retries after 5 s then 10 s."""
    return await h.queue("q", lease_seconds=10, max_attempts=3, initial_interval_seconds=5, backoff_coefficient=2)


async def test_an_expired_lease_requeues_the_next_attempt_after_the_backoff(h, q):
    task = await h.create(queue="q")
    first = await h.claim_one("q")
    assert first.run.attempt == 1
    assert first.lease_until == h.clock.now() + timedelta(seconds=10)

    assert (await h.advance(9.9)).leases_expired == 0
    assert (await h.task(task.id)).status == "in_progress"

    assert (await h.advance(0.1)).leases_expired == 1
    expired_at = h.clock.now()
    task = await h.task(task.id)
    assert task.status == "scheduled"
    assert task.attempts == 1
    old, queued = await h.runs(task.id)
    assert (old.status, old.end_reason, old.ended_at) == ("failed", "lease_expired", expired_at)
    assert (queued.status, queued.attempt) == ("queued", 2)
    assert queued.available_at == expired_at + timedelta(seconds=5)

    assert await h.claim("q") == []
    await h.advance(4.9)
    assert (await h.task(task.id)).status == "scheduled"
    assert await h.claim("q") == []

    assert (await h.advance(0.1)).timers_fired == 1
    assert (await h.task(task.id)).status == "ready"
    second = await h.claim_one("q")
    assert (second.run.id, second.run.attempt) == (queued.id, 2)
    assert (await h.task(task.id)).status == "in_progress"


async def test_a_task_fails_once_every_attempt_has_expired(h, q):
    task = await h.create(queue="q")
    for attempt, backoff in [(1, 5), (2, 10)]:
        claim = await h.claim_one("q")
        assert claim.run.attempt == attempt
        await h.advance(10)
        assert (await h.task(task.id)).status == "scheduled"
        await h.advance(backoff)
    last = await h.claim_one("q")
    assert last.run.attempt == 3
    assert (await h.advance(10)).leases_expired == 1

    task = await h.task(task.id)
    assert (task.status, task.attempts, task.error) == ("failed", 3, "lease_expired")
    assert task.closed_at == h.clock.now()
    assert [r.status for r in await h.runs(task.id)] == ["failed"] * 3
    types = await h.event_types(task.id)
    assert types.count("run.lease_expired") == 3
    assert types[-1] == "task.failed"
    await h.advance(3600)
    assert await h.claim("q") == []


async def test_a_heartbeat_keeps_the_lease(h, q):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    for _ in range(5):
        await h.advance(8)
        run = await h.heartbeat(claim, extend_seconds=10)
        assert run.lease_until == h.clock.now() + timedelta(seconds=10)
    assert (await h.advance(9)).leases_expired == 0
    await h.complete(claim, {"done": True})
    assert (await h.task(task.id)).status == "completed"


async def test_a_heartbeat_without_a_length_renews_the_lease_as_granted(h, q):
    await h.create(queue="q")
    claim = await h.claim_one("q", lease_seconds=4)
    await h.advance(3)
    run = await h.heartbeat(claim)
    assert run.lease_until == h.clock.now() + timedelta(seconds=4)
    assert (await h.advance(3.9)).leases_expired == 0
    assert (await h.advance(0.1)).leases_expired == 1


async def test_retry_backoff_grows_and_is_capped(h):
    await h.queue("capped", max_attempts=4, initial_interval_seconds=5, backoff_coefficient=2, max_interval_seconds=8)
    task = await h.create(queue="capped")
    claim = await h.claim_one("capped")
    for attempt, delay in [(1, 5), (2, 8), (3, 8)]:
        assert claim.run.attempt == attempt
        failed_at = h.clock.now()
        await h.fail(claim, f"error {attempt}")
        task = await h.task(task.id)
        assert (task.status, task.attempts) == ("scheduled", attempt)
        queued = (await h.runs(task.id))[-1]
        assert (queued.status, queued.available_at) == ("queued", failed_at + timedelta(seconds=delay))

        h.clock.advance(delay - 0.001)
        assert await h.claim("capped") == []
        h.clock.advance(0.001)
        # Claimable as soon as the backoff is over, even before the ticker has fired the retry timer.
        claim = await h.claim_one("capped")
        assert (await h.task(task.id)).status == "in_progress"
    assert claim.run.attempt == 4
    await h.complete(claim, "finally")
    assert (await h.task(task.id)).status == "completed"
    assert (await h.advance(60)).timers_fired == 0  # the retry timers went with the claims


async def test_a_failure_that_is_not_retryable_fails_the_task_at_once(h, q):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    await h.fail(claim, "bad input", retryable=False)
    task = await h.task(task.id)
    assert (task.status, task.error, task.attempts) == ("failed", "bad input", 1)
    [run] = await h.runs(task.id)
    assert (run.status, run.end_reason) == ("failed", "failed_permanently")


async def test_task_max_attempts_overrides_the_queue(h, q):
    task = await h.create(queue="q", max_attempts=1)
    await h.fail(await h.claim_one("q"))
    assert (await h.task(task.id)).status == "failed"


async def test_release_gives_the_task_back_without_spending_an_attempt(h):
    await h.queue("once", max_attempts=1)
    task = await h.create(queue="once")
    for _ in range(3):
        claim = await h.claim_one("once")
        assert claim.run.attempt == 1
        released = await h.release(claim, "shutting down")
        assert (released.status, released.end_reason) == ("canceled", "released")
        task = await h.task(task.id)
        assert (task.status, task.attempts) == ("ready", 0)
    final = await h.claim_one("once")
    await h.complete(final, "ok")
    task = await h.task(task.id)
    assert (task.status, task.attempts, task.output) == ("completed", 1, "ok")
    assert [r.end_reason for r in await h.runs(task.id)] == ["released"] * 3 + ["completed"]


async def test_a_late_result_after_expiry_is_refused_and_kept(h, q):
    task = await h.create(queue="q")
    stale = await h.claim_one("q")
    await h.advance(10)
    await h.advance(5)
    current = await h.claim_one("q")
    assert current.run.attempt == 2

    with pytest.raises(StaleClaim):
        await h.complete(stale, {"answer": "late"})

    late = [e for e in await h.timeline(task.id) if e.type == "run.late_result"]
    assert len(late) == 1
    assert late[0].run_id == stale.run.id
    assert late[0].payload["result"] == {"answer": "late"}
    assert late[0].payload["action"] == "complete"
    # The current attempt is untouched and can still finish.
    held = await h.run(current.run.id)
    assert (held.status, held.lease_until) == ("claimed", current.lease_until)
    task = await h.task(task.id)
    assert (task.status, task.output, task.attempts) == ("in_progress", None, 1)
    await h.complete(current, {"answer": "on time"})
    task = await h.task(task.id)
    assert (task.status, task.output) == ("completed", {"answer": "on time"})


async def test_a_lapsed_lease_is_fenced_even_before_the_ticker_notices(h, q):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    h.clock.advance(10)  # no tick: the lease has run out, nobody has expired it yet

    with pytest.raises(StaleClaim):
        await h.fail(claim, "too late")

    [expired, queued] = await h.runs(task.id)
    assert (expired.status, expired.end_reason) == ("failed", "lease_expired")
    assert (queued.status, queued.attempt) == ("queued", 2)
    task = await h.task(task.id)
    assert (task.status, task.attempts) == ("scheduled", 1)
    late = [e for e in await h.timeline(task.id) if e.type == "run.late_result"]
    assert [e.payload["error"] for e in late] == ["too late"]
    assert (await h.advance(0)).leases_expired == 0


async def test_a_wrong_token_changes_nothing(h, q):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    before = await h.timeline(task.id)
    forged = type(claim)(task=claim.task, run=claim.run, claim_token="clm_forged", lease_until=claim.lease_until)
    for call in (h.complete, h.fail, h.release, h.heartbeat):
        with pytest.raises(StaleClaim):
            await call(forged)
    assert await h.timeline(task.id) == before
    run = await h.run(claim.run.id)
    assert (run.status, run.lease_until) == ("claimed", claim.lease_until)


async def test_a_finished_run_refuses_its_own_token(h, q):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    await h.complete(claim, 1)
    with pytest.raises(StaleClaim):
        await h.complete(claim, 2)
    assert (await h.task(task.id)).output == 1
