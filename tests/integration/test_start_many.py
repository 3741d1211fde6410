"""Starting many held runs in one unit of work (``runs.start_many``, ``POST /v1/runs/start``): each run is
started or refused on its own, as ``start`` would treat it alone, and calls arriving together share one."""

from __future__ import annotations

import asyncio

import pytest
from harness import Harness
from test_shared_commits import batch_sizes

from workloom.domain.actors import Actor
from workloom.domain.errors import NotFound, StaleClaim, ValidationFailed, WorkloomError
from workloom.domain.models import Claim, Run
from workloom.engine import runs


async def _claimed(h: Harness, count: int, lease_seconds: int | None = None) -> list[Claim]:
    for i in range(count):
        await h.create(f"job {i}", queue="starts")
    return await h.claim("starts", limit=count, lease_seconds=lease_seconds)


def _statuses(outcomes: list[Run | WorkloomError]) -> list[str]:
    return [o.status if isinstance(o, Run) else type(o).__name__ for o in outcomes]


async def test_each_held_run_starts_with_one_event_and_a_refused_one_changes_nothing(h: Harness) -> None:
    held = await _claimed(h, 3)
    already = held[2]
    first_started = h.clock.now()
    await h.do(lambda u: runs.start(u, already.run.id, already.claim_token))
    h.clock.advance(1)

    items = [
        (held[0].run.id, held[0].claim_token),
        (held[1].run.id, "clm_wrong.token"),
        (already.run.id, already.claim_token),
        ("run_missing", held[0].claim_token),
        (held[0].run.id, held[0].claim_token),  # sent twice: started once, given to both
    ]
    outcomes = await h.do(lambda u: runs.start_many(u, items))

    assert _statuses(outcomes) == ["running", "StaleClaim", "running", "NotFound", "running"]
    assert isinstance(outcomes[3], NotFound)
    started = await h.run(held[0].run.id)
    assert (started.status, started.started_at) == ("running", h.clock.now())
    assert (await h.run(held[1].run.id)).status == "claimed"  # the wrong token started nothing
    assert (await h.run(already.run.id)).started_at == first_started  # given back as it was
    # One run.started per run started, numbered after the claim's events; none for the repeat or the refusal.
    types = await h.event_types(held[0].task.id)
    assert types[-1] == "run.started" and types.count("run.started") == 1
    assert "run.started" not in await h.event_types(held[1].task.id)
    assert (await h.event_types(already.task.id)).count("run.started") == 1
    numbers = [e.task_sequence for e in await h.timeline(held[0].task.id)]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_a_run_whose_lease_ran_out_is_refused_and_requeued_while_the_others_start(h: Harness) -> None:
    held = await _claimed(h, 2, lease_seconds=30)
    h.clock.advance(31)

    outcomes = await h.do(lambda u: runs.start_many(u, [(c.run.id, c.claim_token) for c in held]))

    assert all(isinstance(o, StaleClaim) for o in outcomes)
    assert "lease ran out" in str(outcomes[0])
    # The expiry the refusal found was committed: each run ended, its task queued again.
    for claim in held:
        assert (await h.run(claim.run.id)).status == "failed"
        assert [r.status for r in await h.runs(claim.task.id)] == ["failed", "queued"]


async def test_more_runs_than_a_batch_holds_are_refused_whole(h: Harness) -> None:
    held = await _claimed(h, 1)

    with pytest.raises(ValidationFailed, match="at most 1000 runs"):
        await h.do(lambda u: runs.start_many(u, [(held[0].run.id, held[0].claim_token)] * 1001))

    assert (await h.run(held[0].run.id)).status == "claimed"


async def test_starts_arriving_together_are_one_batch_each_answered_for_its_own_runs(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        await h.create(f"job {i}", queue="starts")
    held = [await h.claim_one("starts", worker=Actor("agent_session", f"w{i}")) for i in range(4)]
    batches = batch_sizes(monkeypatch, "_start_each")
    calls = [
        runs.StartMany([(c.run.id, c.claim_token) for c in held[:2]]),
        runs.StartMany([(held[2].run.id, "clm_wrong.token"), (held[3].run.id, held[3].claim_token)]),
        runs.StartMany([(held[3].run.id, held[3].claim_token)] * 1001),
    ]

    done = await asyncio.gather(*(h.wl.run(h.principal, call, shared=True) for call in calls), return_exceptions=True)

    assert batches == [4]  # the first two calls' items, in one batch
    first, second, too_many = done
    assert isinstance(first, list) and _statuses(first) == ["running", "running"]
    assert isinstance(second, list) and _statuses(second) == ["StaleClaim", "running"]
    assert isinstance(too_many, ValidationFailed)
    assert [(await h.run(c.run.id)).status for c in held] == ["running", "running", "claimed", "running"]
