"""Heartbeating many held runs in one unit of work (``runs.heartbeat_many``, ``POST /v1/runs/heartbeat``): each
lease renewed or refused on its own, as ``heartbeat`` would treat it alone; a worker's leases in one request
and, where a beat only renews, one statement for all of them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from harness import Harness
from test_hot_paths import POSTGRES_ONLY, RoundTrips
from test_shared_commits import batch_sizes

from workloom.domain.errors import NotFound, ValidationFailed, WorkloomError
from workloom.domain.models import Claim, Run
from workloom.engine import runs
from workloom.engine.runs import Beat


async def _claimed(h: Harness, count: int, lease_seconds: int = 30, queue: str = "beats") -> list[Claim]:
    for i in range(count):
        await h.create(f"job {i}", queue=queue)
    return await h.claim(queue, limit=count, lease_seconds=lease_seconds)


def _kinds(outcomes: list[Run | WorkloomError]) -> list[str]:
    return ["renewed" if isinstance(o, Run) else type(o).__name__ for o in outcomes]


async def test_each_lease_is_renewed_or_refused_on_its_own(h: Harness) -> None:
    held = await _claimed(h, 4)
    h.clock.advance(10)
    now = h.clock.now()

    outcomes = await h.do(
        lambda u: runs.heartbeat_many(
            u,
            [
                Beat(held[0].run.id, held[0].claim_token),
                Beat(held[1].run.id, held[1].claim_token, extend_seconds=120, progress={"step": 2}),
                Beat(held[2].run.id, "clm_wrong.token"),
                Beat("run_missing", held[0].claim_token),
                Beat(held[3].run.id, held[3].claim_token, usage={"tokens": 5}),
                Beat(held[0].run.id, held[0].claim_token),  # sent twice: renewed once, given to both
            ],
        )
    )

    assert _kinds(outcomes) == ["renewed", "renewed", "StaleClaim", "NotFound", "renewed", "renewed"]
    assert isinstance(outcomes[3], NotFound)
    # As granted at the claim (30 s) unless the beat asks for more.
    expected = {0: (0, 30), 1: (1, 120), 3: (4, 30)}  # by the claim: its item, the lease it renewed
    for i, (item, seconds) in expected.items():
        run = await h.run(held[i].run.id)
        assert (run.lease_until, run.heartbeat_at) == (now + timedelta(seconds=seconds), now)
        assert outcomes[item] == run
    assert (await h.run(held[1].run.id)).progress == {"step": 2}
    assert (await h.run(held[3].run.id)).usage == {"tokens": 5}
    assert (await h.run(held[2].run.id)).lease_until == held[2].lease_until  # the wrong token renewed nothing
    assert (await h.event_types(held[1].task.id)).count("run.progress") == 1
    assert "run.progress" not in await h.event_types(held[0].task.id)


async def test_a_lapsed_lease_is_refused_and_the_task_requeued_while_the_others_are_renewed(h: Harness) -> None:
    lapsing = await _claimed(h, 1, lease_seconds=5, queue="short")
    held = await _claimed(h, 1, lease_seconds=60)
    h.clock.advance(6)

    outcomes = await h.do(lambda u: runs.heartbeat_many(u, [Beat(c.run.id, c.claim_token) for c in (*lapsing, *held)]))

    assert _kinds(outcomes) == ["StaleClaim", "renewed"]
    assert "lease ran out" in str(outcomes[0])
    assert [r.status for r in await h.runs(lapsing[0].task.id)] == ["failed", "queued"]
    assert (await h.run(held[0].run.id)).lease_until == h.clock.now() + timedelta(seconds=60)


async def test_more_beats_than_a_batch_holds_are_refused_whole(h: Harness) -> None:
    held = await _claimed(h, 1)
    h.clock.advance(1)

    with pytest.raises(ValidationFailed, match="at most 1000 runs"):
        await h.do(lambda u: runs.heartbeat_many(u, [Beat(held[0].run.id, held[0].claim_token)] * 1001))

    assert (await h.run(held[0].run.id)).lease_until == held[0].lease_until


async def test_beats_arriving_together_are_one_batch(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    held = await _claimed(h, 3)
    batches = batch_sizes(monkeypatch, "_beat_each")
    calls = [runs.HeartbeatMany([Beat(c.run.id, c.claim_token)]) for c in held]

    done = await asyncio.gather(*(h.wl.run(h.principal, call, shared=True) for call in calls))

    assert batches == [3]
    assert [_kinds(outcomes) for outcomes in done] == [["renewed"]] * 3


@POSTGRES_ONLY
async def test_renewing_many_leases_is_one_read_and_one_write(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    held = await _claimed(h, 50)
    trips = RoundTrips(monkeypatch)
    h.clock.advance(5)

    trips.on = True
    outcomes = await h.do(lambda u: runs.heartbeat_many(u, [Beat(c.run.id, c.claim_token) for c in held]))
    trips.on = False

    assert _kinds(outcomes) == ["renewed"] * 50
    # Begin; the fifty runs read and locked; their leases renewed in one statement; commit.
    assert trips.sent == ["BEGIN", "SELECT", "UPDATE", "COMMIT"]


@POSTGRES_ONLY
async def test_beats_that_report_progress_are_written_together_too(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    held = await _claimed(h, 40)
    trips = RoundTrips(monkeypatch)
    h.clock.advance(5)
    beats = [
        Beat(c.run.id, c.claim_token, progress={"step": i} if i % 2 else None, usage={"tokens": i} if i % 4 else None)
        for i, c in enumerate(held)
    ]

    trips.on = True
    outcomes = await h.do(lambda u: runs.heartbeat_many(u, beats))
    trips.on = False

    assert _kinds(outcomes) == ["renewed"] * 40
    # Begin; the runs read and locked; the two kinds of beat written together; the twenty run.progress
    # events numbered in their tasks' sequences and written; commit. (One update a reporting beat before.)
    assert trips.sent == ["BEGIN", "SELECT", "WITH", "UPDATE", "INSERT", "COMMIT"]
    for i, claim in enumerate(held):
        run = await h.run(claim.run.id)
        assert run.progress == ({"step": i} if i % 2 else None)
        assert run.usage == ({"tokens": i} if i % 4 else None)
        assert run.lease_until == h.clock.now() + timedelta(seconds=30)
