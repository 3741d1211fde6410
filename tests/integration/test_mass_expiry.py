"""Many leases running out together (a fleet of workers gone at once): the ticker expires them a few to a
transaction, each as it would alone, and one that cannot be expired holds back none of the others."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Harness
from test_hot_paths import POSTGRES_ONLY, RoundTrips

from workloom.domain.models import Claim
from workloom.engine import runs, ticker


async def _held(h: Harness, count: int) -> list[Claim]:
    await h.queue("fleet", lease_seconds=10, max_attempts=3, initial_interval_seconds=5)
    for i in range(count):
        await h.create(f"job {i}", queue="fleet")
    return await h.claim("fleet", limit=count)


async def _each_retried(h: Harness, held: list[Claim]) -> None:
    for claim in held:
        task = await h.task(claim.task.id)
        assert (task.status, task.attempts) == ("scheduled", 1)
        expired, queued = await h.runs(task.id)
        assert (expired.status, expired.end_reason) == ("failed", "lease_expired")
        assert (queued.status, queued.attempt) == ("queued", 2)
        assert (await h.event_types(task.id))[-3:] == ["run.lease_expired", "task.scheduled", "run.queued"]


async def test_leases_running_out_together_are_each_expired_and_retried(h: Harness) -> None:
    count = 2 * ticker.EXPIRED_TOGETHER + 5
    held = await _held(h, count)

    assert (await h.advance(10)).leases_expired == count

    await _each_retried(h, held)
    assert (await h.advance(5)).timers_fired == count
    assert len(await h.claim("fleet", limit=count)) == count


@POSTGRES_ONLY
async def test_they_are_expired_a_few_to_a_transaction(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 2 * ticker.EXPIRED_TOGETHER + 5
    await _held(h, count)
    trips = RoundTrips(monkeypatch)
    h.clock.advance(10)

    trips.on = True
    result = await h.wl.ticker.tick()
    trips.on = False

    assert result.leases_expired == count
    # Three transactions for the leases (20, 20 and 5 runs), one that found no timer due: one commit a run
    # before (49 in all).
    assert trips.sent.count("COMMIT") == 4


async def test_a_lease_that_cannot_be_expired_holds_back_none_of_the_others(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _held(h, 12)
    stuck = held[5]
    expire = runs.expire

    async def failing_for_one(u: Any, run: Any, task: Any) -> Any:
        if run.id == stuck.run.id:
            raise RuntimeError("a row this code cannot expire")
        return await expire(u, run, task)

    monkeypatch.setattr(runs, "expire", failing_for_one)
    assert (await h.advance(10)).leases_expired == 11
    await _each_retried(h, [c for c in held if c is not stuck])
    assert (await h.task(stuck.task.id)).status == "in_progress"

    monkeypatch.setattr(runs, "expire", expire)  # mended: the next pass expires it
    assert (await h.advance(0.5)).leases_expired == 1
    await _each_retried(h, [stuck])
