"""Run operations the AGH vocabulary needs: claim-next across queues, claiming one run, attaching a
session, canceling one run, explicit enqueue, token-less holders, usage summaries, task scope."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from harness import WORKER, Harness

from workloom.domain.actors import Actor
from workloom.domain.errors import Conflict, InvalidTransition, NotHolder, StaleClaim, ValidationFailed
from workloom.domain.models import Claim
from workloom.engine import runs, tasks
from workloom.engine.unit import IdempotencyKey

OTHER = Actor("agent_session", "worker-2")


async def claim_next(h: Harness, queues: list[str] | None = None, worker: Actor = WORKER) -> Claim | None:
    return await h.do(lambda u: runs.claim_next(u, worker, queues=queues))


# -- claim-next ---------------------------------------------------------------------------------------


async def test_claim_next_takes_the_highest_priority_then_the_oldest_across_queues(h):
    low_a = await h.create("low a", queue="a", priority="low")
    h.clock.advance(1)
    high_b = await h.create("high b", queue="b", priority="high")
    h.clock.advance(1)
    urgent_c = await h.create("urgent c", queue="c", priority="urgent")
    h.clock.advance(1)
    high_a = await h.create("high a", queue="a", priority="high")

    order = []
    while (claim := await claim_next(h)) is not None:
        order.append(claim.task.id)
        assert claim.task.status == "in_progress"
        assert claim.run.status == "claimed"
        assert claim.run.claimed_by == WORKER
    assert order == [urgent_c.id, high_b.id, high_a.id, low_a.id]


async def test_claim_next_keeps_to_the_named_queues_and_ignores_unknown_names(h):
    in_a = await h.create("a", queue="a", priority="low")
    await h.create("b", queue="b", priority="urgent")

    assert await claim_next(h, ["nowhere"]) is None
    claim = await claim_next(h, ["a", "nowhere"])
    assert claim is not None
    assert (claim.task.id, claim.run.queue) == (in_a.id, "a")
    assert await claim_next(h, ["a"]) is None


async def test_claim_next_waits_out_a_retry_backoff(h):
    await h.queue("q", initial_interval_seconds=30)
    task = await h.create(queue="q")
    await h.fail(await h.claim_one("q"))
    assert (await h.task(task.id)).status == "scheduled"
    assert await claim_next(h) is None
    h.clock.advance(30)
    claim = await claim_next(h)
    assert claim is not None
    assert (claim.task.id, claim.run.attempt, claim.task.status) == (task.id, 2, "in_progress")


async def test_claim_next_does_not_reach_into_another_workspace(h):
    other = await h.other_workspace("globex")
    await other.create(queue="q", priority="urgent")
    assert await claim_next(h) is None


async def test_concurrent_claim_next_hands_each_run_to_one_claimer(h):
    created = [await h.create(f"t{i}", queue=f"q{i % 3}") for i in range(12)]
    claims = await asyncio.gather(*(claim_next(h, worker=Actor("agent_session", f"w{i}")) for i in range(16)))
    taken = [c.task.id for c in claims if c is not None]
    assert sorted(taken) == sorted(t.id for t in created)


async def test_the_long_poll_claim_next_wakes_when_work_arrives(h):
    looked = asyncio.Event()  # set once the claimer found nothing and is about to wait

    def render(claim: Claim | None) -> tuple[int, Claim | None]:
        if claim is None:
            looked.set()
        return 200, claim

    waiting = asyncio.create_task(h.wl.claim_next(h.principal, WORKER, wait_seconds=20, render=render))
    await asyncio.wait_for(looked.wait(), timeout=10)
    task = await h.create(queue="fresh")
    status, claim = await asyncio.wait_for(waiting, timeout=10)
    assert status == 200
    assert isinstance(claim, Claim)
    assert claim.task.id == task.id


async def test_the_long_poll_on_named_queues_answers_none_when_the_wait_ends(h):
    await h.queue("a")
    status, claim = await h.wl.claim_next(
        h.principal, WORKER, queues=["a"], wait_seconds=0, render=lambda found: (200, found)
    )
    assert (status, claim) == (200, None)


# -- claiming one run ---------------------------------------------------------------------------------


async def test_claim_run_claims_that_run_and_no_other(h):
    first = await h.create("first", queue="q", priority="urgent")
    second = await h.create("second", queue="q", priority="low")
    run = (await h.runs(second.id))[0]

    claim = await h.do(lambda u: runs.claim_run(u, run.id, WORKER, 60))
    assert (claim.run.id, claim.task.id, claim.task.status) == (run.id, second.id, "in_progress")
    assert claim.lease_until == h.clock.now() + timedelta(seconds=60)
    assert (await h.task(first.id)).status == "ready"

    with pytest.raises(InvalidTransition):
        await h.do(lambda u: runs.claim_run(u, run.id, OTHER, None))


async def test_claim_run_refuses_a_run_still_in_its_backoff(h):
    await h.queue("q", initial_interval_seconds=30)
    task = await h.create(queue="q")
    await h.fail(await h.claim_one("q"))
    retry = (await h.runs(task.id))[-1]
    with pytest.raises(Conflict, match="backoff"):
        await h.do(lambda u: runs.claim_run(u, retry.id, WORKER, None))
    h.clock.advance(30)
    claim = await h.do(lambda u: runs.claim_run(u, retry.id, WORKER, None))
    assert (claim.run.attempt, claim.task.status) == (2, "in_progress")


async def test_a_claim_records_the_idempotency_key_it_came_with(h):
    task = await h.create(queue="q")
    run = (await h.runs(task.id))[0]
    assert run.idempotency_key is None
    assert run.origin == h.principal.origin

    key = IdempotencyKey("claim-key-1", b"claim")
    _, claim = await h.wl.respond(
        h.principal, lambda u: runs.claim_run(u, run.id, WORKER, None), lambda c: (200, c), key
    )
    assert claim.run.idempotency_key == "claim-key-1"
    assert (await h.run(run.id)).idempotency_key == "claim-key-1"


# -- enqueue ------------------------------------------------------------------------------------------


async def test_enqueue_gives_a_ready_task_a_run_once(h):
    await h.queue("manual", start_mode="manual")
    task = await h.create(queue="manual")
    assert await h.runs(task.id) == []

    key = IdempotencyKey("enqueue-1", b"enqueue")
    _, run = await h.wl.respond(h.principal, lambda u: runs.enqueue(u, task.id), lambda r: (201, r), key)
    assert (run.status, run.attempt, run.queue, run.idempotency_key) == ("queued", 1, "manual", "enqueue-1")
    assert run.origin == h.principal.origin
    with pytest.raises(Conflict, match="active run"):
        await h.do(lambda u: runs.enqueue(u, task.id))
    assert (await h.claim_one("manual")).run.id == run.id
    assert "run.queued" in await h.event_types(task.id)


async def test_enqueue_refuses_tasks_that_are_not_ready_or_have_no_queue(h):
    no_queue = await h.create("no queue")
    with pytest.raises(Conflict, match="no queue"):
        await h.do(lambda u: runs.enqueue(u, no_queue.id))
    draft = await h.create("draft", queue="q", draft=True)
    with pytest.raises(InvalidTransition):
        await h.do(lambda u: runs.enqueue(u, draft.id))
    done = await h.create("done", queue="q")
    await h.complete(await h.claim_one("q"))
    with pytest.raises(InvalidTransition):
        await h.do(lambda u: runs.enqueue(u, done.id))


# -- attach a session ----------------------------------------------------------------------------------


async def test_attach_session_moves_a_claimed_run_to_starting_then_start_runs_it(h):
    await h.create(queue="q")
    claim = await h.claim_one("q")
    run = await h.do(lambda u: runs.attach_session(u, claim.run.id, "sess-1", claim.claim_token))
    assert (run.status, run.session_id) == ("starting", "sess-1")
    run = await h.do(lambda u: runs.start(u, claim.run.id, claim.claim_token))
    assert (run.status, run.session_id) == ("running", "sess-1")
    run = await h.do(lambda u: runs.attach_session(u, claim.run.id, "sess-2", claim.claim_token))
    assert (run.status, run.session_id) == ("running", "sess-2")

    attached = [e for e in await h.timeline(claim.task.id) if e.type == "run.session_attached"]
    assert [(e.payload["session_id"], e.payload["from_status"], e.payload["status"]) for e in attached] == [
        ("sess-1", "claimed", "starting"),
        ("sess-2", "running", "running"),
    ]


async def test_attach_session_checks_the_token_and_the_state(h):
    task = await h.create(queue="q")
    queued = (await h.runs(task.id))[0]
    with pytest.raises(InvalidTransition):
        await h.do(lambda u: runs.attach_session(u, queued.id, "sess"))
    claim = await h.claim_one("q")
    with pytest.raises(StaleClaim):
        await h.do(lambda u: runs.attach_session(u, claim.run.id, "sess", "clm_wrong"))
    await h.complete(claim)
    with pytest.raises(StaleClaim):
        await h.do(lambda u: runs.attach_session(u, claim.run.id, "sess", claim.claim_token))


async def test_an_agent_key_acts_without_a_token_only_on_runs_it_holds(wl, clock, h):
    agent = await Harness.open(wl, clock, role="agent")
    intruder = await Harness.open(wl, clock, role="agent")
    await h.create(queue="q")
    claim = await agent.do(lambda u: runs.claim_next(u, agent.principal.actor))
    assert claim is not None

    with pytest.raises(NotHolder):
        await intruder.do(lambda u: runs.attach_session(u, claim.run.id, "sess"))
    with pytest.raises(NotHolder):
        await intruder.do(lambda u: runs.heartbeat(u, claim.run.id, None, 30))
    with pytest.raises(NotHolder):
        await intruder.do(lambda u: runs.complete(u, claim.run.id, None, "stolen"))

    run = await agent.do(lambda u: runs.attach_session(u, claim.run.id, "sess-a"))
    assert run.status == "starting"
    await agent.do(lambda u: runs.heartbeat(u, claim.run.id, None, 30, usage={"input_tokens": 5}))
    run = await agent.do(lambda u: runs.complete(u, claim.run.id, None, "done", {"output_tokens": 7}))
    assert (run.status, run.result, run.usage) == ("completed", "done", {"input_tokens": 5, "output_tokens": 7})
    # A person's key is an operator: no token needed, but a finished run is finished.
    with pytest.raises(StaleClaim):
        await h.do(lambda u: runs.complete(u, claim.run.id, None, "again"))


# -- cancel one run ----------------------------------------------------------------------------------


async def test_cancel_run_returns_a_task_in_progress_to_ready_without_a_run(h):
    task = await h.create(queue="q")
    claim = await h.claim_one("q")
    run = await h.do(lambda u: runs.cancel_run(u, claim.run.id, "wrong agent"))
    assert (run.status, run.end_reason) == ("canceled", "run_canceled")
    task = await h.task(task.id)
    assert (task.status, task.attempts) == ("ready", 0)
    assert [r.status for r in await h.runs(task.id)] == ["canceled"]
    assert await h.claim("q") == []
    types = await h.event_types(task.id)
    assert types[-2:] == ["run.canceled", "task.ready"]

    # The former holder is told, and its late result is kept, not applied.
    with pytest.raises(StaleClaim):
        await h.complete(claim, "late")
    assert "run.late_result" in await h.event_types(task.id)
    assert (await h.task(task.id)).status == "ready"

    fresh = await h.do(lambda u: runs.enqueue(u, task.id))
    assert (fresh.attempt, (await h.claim_one("q")).run.id) == (1, fresh.id)


async def test_cancel_run_of_a_waiting_retry_drops_the_retry(h):
    await h.queue("q", initial_interval_seconds=30)
    task = await h.create(queue="q")
    await h.fail(await h.claim_one("q"))
    retry = (await h.runs(task.id))[-1]
    await h.do(lambda u: runs.cancel_run(u, retry.id, None))
    assert (await h.task(task.id)).status == "ready"
    assert (await h.advance(60)).timers_fired == 0
    assert (await h.task(task.id)).status == "ready"


async def test_cancel_run_of_a_queued_run_leaves_the_task_ready_and_a_final_run_is_refused(h):
    task = await h.create(queue="q")
    queued = (await h.runs(task.id))[0]
    await h.do(lambda u: runs.cancel_run(u, queued.id, None))
    assert (await h.task(task.id)).status == "ready"
    with pytest.raises(InvalidTransition):
        await h.do(lambda u: runs.cancel_run(u, queued.id, None))


# -- usage --------------------------------------------------------------------------------------------


async def test_usage_merges_per_run_and_sums_per_task(h):
    await h.queue("q", initial_interval_seconds=0)
    task = await h.create(queue="q")
    first = await h.claim_one("q")
    await h.do(
        lambda u: runs.heartbeat(u, first.run.id, first.claim_token, None, usage={"input_tokens": 10, "turns": 1})
    )
    await h.do(lambda u: runs.heartbeat(u, first.run.id, first.claim_token, None, usage={"input_tokens": 25}))
    await h.fail(first)
    assert (await h.run(first.run.id)).usage == {"input_tokens": 25, "turns": 1}

    second = await h.claim_one("q")
    await h.do(
        lambda u: runs.complete(
            u,
            second.run.id,
            second.claim_token,
            "ok",
            {"input_tokens": 5, "output_tokens": 3, "total_cost": 0.5, "cost_currency": "USD"},
        )
    )
    summary = await h.do(lambda u: runs.usage_summary(u, task.id))
    assert summary == {
        "input_tokens": 30,
        "output_tokens": 3,
        "total_tokens": 33,
        "turns": 1,
        "total_cost": 0.5,
        "cost_currency": "USD",
    }


# -- task scope and counts ------------------------------------------------------------------------------


async def test_scope_is_stored_changed_validated_and_counts_are_cheap(h):
    parent = await h.create("parent", scope="global")
    assert parent.scope == "global"
    assert (await h.create("default")).scope == "workspace"
    child = await h.create("child", parent_task_id=parent.id, depends_on=[parent.id])
    await h.create("child 2", parent_task_id=parent.id)
    patched = await h.do(lambda u: tasks.patch(u, parent.id, {"scope": "workspace"}))
    assert patched.scope == "workspace"
    with pytest.raises(ValidationFailed):
        await h.create("bad", scope="universe")
    counts = await h.do(lambda u: tasks.counts(u, [parent.id, child.id, "task_missing"]))
    assert counts == {parent.id: (2, 0), child.id: (0, 1), "task_missing": (0, 0)}


async def test_batch_reads_for_listings(h):
    await h.queue("q", max_attempts=4)
    first = await h.create("first", queue="q")
    second = await h.create("second", queue="q", max_attempts=2, depends_on=[first.id])
    loose = await h.create("no queue")
    claim = await h.claim_one("q")

    active = await h.do(lambda u: runs.active_for_tasks(u, [first.id, second.id, loose.id]))
    assert {task_id: run.id for task_id, run in active.items()} == {first.id: claim.run.id}
    assert active[first.id].queue == "q"
    limits = await h.do(lambda u: tasks.max_attempts(u, [first.id, second.id, loose.id]))
    assert limits == {first.id: 4, second.id: 2, loose.id: None}
    edges = await h.do(lambda u: tasks.dependency_records(u, [first.id, second.id]))
    assert edges == {first.id: [], second.id: [(first.id, second.created_at)]}
    found = await h.do(lambda u: tasks.get_many(u, [second.id, "task_missing", first.id, second.id]))
    assert [t.id for t in found] == [second.id, first.id]
    assert found[0].depends_on == [first.id]

    other = await h.other_workspace("globex")
    assert await other.do(lambda u: tasks.get_many(u, [first.id])) == []
    assert await other.do(lambda u: runs.active_for_tasks(u, [first.id])) == {}


async def test_a_principal_can_read_its_own_workspace(h):
    workspace = await h.wl.access.workspace(h.principal)
    assert (workspace.id, workspace.name) == (h.principal.workspace_id, "acme")
