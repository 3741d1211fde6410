"""What holds a task back and what lets it go: dependencies, approval, manual start, cancel, due dates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workloom.domain.errors import Conflict, StaleClaim, ValidationFailed
from workloom.engine import queues, tasks
from workloom.engine.queues import QueueSettings


async def test_a_dependent_task_is_blocked_until_its_dependency_completes(h):
    first = await h.create("first", queue="q")
    second = await h.create("second", queue="q", depends_on=[first.id])
    assert (second.status, second.blocked_reason, second.depends_on) == ("blocked", "dependencies", [first.id])
    assert await h.runs(second.id) == []

    claims = await h.claim("q", limit=10)
    assert [c.task.id for c in claims] == [first.id]
    await h.complete(claims[0], "done")

    second = await h.task(second.id)
    assert (second.status, second.blocked_reason) == ("ready", None)
    assert [c.task.id for c in await h.claim("q", limit=10)] == [second.id]


async def test_a_failed_dependency_keeps_its_dependents_blocked(h):
    first = await h.create("first", queue="q", max_attempts=1)
    second = await h.create("second", queue="q", depends_on=[first.id])
    await h.fail(await h.claim_one("q"))
    assert (await h.task(second.id)).status == "blocked"
    assert await h.claim("q") == []


async def test_a_dependency_added_later_blocks_a_ready_task_and_withdraws_its_run(h):
    first = await h.create("first", queue="q")
    second = await h.create("second", queue="q")
    second = await h.do(lambda u: tasks.add_dependencies(u, second.id, [first.id]))
    assert (second.status, second.blocked_reason) == ("blocked", "dependencies")
    assert [r.status for r in await h.runs(second.id)] == ["canceled"]
    await h.complete(await h.claim_one("q"))
    assert (await h.claim_one("q")).task.id == second.id


async def test_a_dependency_cycle_is_refused_naming_the_cycle(h):
    a = await h.create("a")
    b = await h.create("b", depends_on=[a.id])
    c = await h.create("c", depends_on=[b.id])

    with pytest.raises(Conflict) as info:
        await h.do(lambda u: tasks.add_dependencies(u, a.id, [c.id]))
    assert "WL-1 -> WL-3 -> WL-2 -> WL-1" in info.value.detail
    assert info.value.extra["cycle"] == ["WL-3", "WL-2", "WL-1"]
    assert (await h.task(a.id)).depends_on == []

    with pytest.raises(Conflict, match="WL-1 -> WL-2 -> WL-1"):
        await h.do(lambda u: tasks.add_dependencies(u, a.id, [b.id]))
    with pytest.raises(ValidationFailed):
        await h.do(lambda u: tasks.add_dependencies(u, a.id, [a.id]))


async def test_approval_blocks_until_approved(h):
    task = await h.create(queue="q", approval_policy="required")
    assert (task.status, task.blocked_reason, task.approval_state) == ("blocked", "approval", "pending")
    assert await h.claim("q") == []

    task = await h.do(lambda u: tasks.approve(u, task.id, "looks fine"))
    assert (task.status, task.approval_state) == ("ready", "approved")
    assert (await h.claim_one("q")).task.id == task.id
    approved = [e for e in await h.timeline(task.id) if e.type == "task.approved"]
    assert approved[0].payload == {"comment": "looks fine"}
    with pytest.raises(Conflict):
        await h.do(lambda u: tasks.approve(u, task.id))


async def test_rejecting_an_approval_cancels_the_task(h):
    task = await h.create(queue="q", approval_policy="required")
    task = await h.do(lambda u: tasks.reject(u, task.id, "not now"))
    assert (task.status, task.approval_state) == ("canceled", "rejected")
    assert task.closed_at == h.clock.now()
    assert await h.claim("q") == []
    with pytest.raises(Conflict):
        await h.do(lambda u: tasks.approve(u, task.id))


async def test_dependencies_are_waited_for_before_approval(h):
    first = await h.create("first", queue="q")
    gated = await h.create("gated", queue="q", depends_on=[first.id], approval_policy="required")
    assert gated.blocked_reason == "dependencies"
    await h.complete(await h.claim_one("q"))
    gated = await h.task(gated.id)
    assert (gated.status, gated.blocked_reason) == ("blocked", "approval")
    await h.do(lambda u: tasks.approve(u, gated.id))
    assert (await h.claim_one("q")).task.id == gated.id


async def test_cancel_cancels_the_whole_subtree_and_its_runs(h):
    root = await h.create("root", queue="q", priority="urgent")
    child = await h.create("child", queue="q", parent_task_id=root.id, priority="high")
    done = await h.create("done child", queue="q", parent_task_id=root.id, priority="high")
    grandchild = await h.create("grandchild", queue="q", parent_task_id=child.id, priority="low")
    bystander = await h.create("bystander", queue="q", priority="low")

    claims = {c.task.id: c for c in await h.claim("q", limit=3)}
    assert set(claims) == {root.id, child.id, done.id}
    await h.complete(claims[done.id], "finished first")

    root = await h.do(lambda u: tasks.cancel(u, root.id, "no longer needed"))
    assert root.status == "canceled"
    for task_id in (root.id, child.id, grandchild.id):
        task = await h.task(task_id)
        assert (task.status, task.closed_at) == ("canceled", h.clock.now())
        assert all(r.status == "canceled" and r.end_reason == "task_canceled" for r in await h.runs(task_id))
    assert (await h.task(done.id)).status == "completed"
    assert (await h.task(bystander.id)).status == "ready"

    with pytest.raises(StaleClaim):
        await h.complete(claims[child.id], "too late")
    assert [c.task.id for c in await h.claim("q", limit=10)] == [bystander.id]
    with pytest.raises(Conflict):
        await h.do(lambda u: tasks.cancel(u, root.id))


async def test_a_manual_queue_enqueues_only_on_start(h):
    await h.queue("manual", start_mode="manual")
    task = await h.create(queue="manual")
    assert task.status == "ready"
    await h.advance(60)
    assert await h.runs(task.id) == []
    assert await h.claim("manual") == []

    task = await h.do(lambda u: tasks.start(u, task.id))
    assert task.start_requested
    [run] = await h.runs(task.id)
    assert (run.status, run.attempt) == ("queued", 1)
    assert (await h.claim_one("manual")).run.id == run.id
    assert "task.start_requested" in await h.event_types(task.id)


async def test_starting_twice_queues_one_run(h):
    await h.queue("manual", start_mode="manual")
    task = await h.create(queue="manual")
    await h.do(lambda u: tasks.start(u, task.id))
    await h.do(lambda u: tasks.start(u, task.id))
    assert len(await h.runs(task.id)) == 1
    assert (await h.event_types(task.id)).count("task.start_requested") == 1


async def test_a_due_date_fires_overdue_once(h):
    task = await h.create(queue="q", due_at=h.clock.now() + timedelta(minutes=1))
    await h.advance(59)
    assert "task.overdue" not in await h.event_types(task.id)
    assert (await h.task(task.id)).overdue_at is None

    assert (await h.advance(1)).timers_fired == 1
    overdue_at = h.clock.now()
    await h.advance(3600)
    events = [e for e in await h.timeline(task.id) if e.type == "task.overdue"]
    assert len(events) == 1
    assert events[0].payload == {"due_at": task.due_at.isoformat()}
    assert (await h.task(task.id)).overdue_at == overdue_at


async def test_a_task_closed_before_its_due_date_is_never_overdue(h):
    task = await h.create(queue="q", due_at=h.clock.now() + timedelta(minutes=1))
    await h.complete(await h.claim_one("q"))
    await h.advance(120)
    assert "task.overdue" not in await h.event_types(task.id)
    assert (await h.task(task.id)).overdue_at is None


async def test_moving_a_due_date_moves_the_timer(h):
    task = await h.create(due_at=h.clock.now() + timedelta(minutes=1))
    later = h.clock.now() + timedelta(minutes=10)
    await h.do(lambda u: tasks.patch(u, task.id, {"due_at": later}))
    await h.advance(120)
    assert "task.overdue" not in await h.event_types(task.id)
    await h.advance(480)
    assert (await h.event_types(task.id)).count("task.overdue") == 1


async def test_giving_a_ready_task_a_queue_makes_it_claimable(h):
    task = await h.create("queued later")
    assert (task.status, task.queue) == ("ready", None)
    task = await h.do(lambda u: tasks.patch(u, task.id, {"queue": "q"}))
    assert (task.status, task.queue) == ("ready", "q")
    assert (await h.claim_one("q")).task.id == task.id


async def test_moving_a_waiting_task_to_another_queue_moves_its_run(h):
    task = await h.create(queue="old")
    await h.do(lambda u: tasks.patch(u, task.id, {"queue": "new"}))
    assert await h.claim("old") == []
    assert (await h.claim_one("new")).task.id == task.id


async def test_taking_the_queue_away_withdraws_the_run(h):
    task = await h.create(queue="q")
    task = await h.do(lambda u: tasks.patch(u, task.id, {"queue": None}))
    assert (task.status, task.queue) == ("ready", None)
    assert [r.status for r in await h.runs(task.id)] == ["canceled"]
    assert await h.claim("q") == []


async def test_switching_a_queue_to_automatic_start_enqueues_its_waiting_tasks(h):
    await h.queue("manual-q", start_mode="manual")
    waiting = await h.create("waits for a start", queue="manual-q")
    assert waiting.status == "ready"
    assert await h.claim("manual-q") == []
    await h.do(lambda u: queues.update(u, "manual-q", QueueSettings(start_mode="auto")))
    claims = await h.claim("manual-q")
    assert [c.task.id for c in claims] == [waiting.id]
