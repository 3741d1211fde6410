"""The observer dashboard's numbers after a scripted scenario, with the clock under the test's control."""

from __future__ import annotations

from datetime import timedelta

import pytest
from harness import Harness

from workloom.domain.actors import Actor
from workloom.domain.dashboard import Dashboard, DashboardFilters, DashboardSettings
from workloom.engine import dashboard, runs, tasks

OWNER = Actor("human", "olga")


async def observe(h: Harness, settings: DashboardSettings | None = None, **filters: str) -> Dashboard:
    return await h.do(lambda u: dashboard.observe(u, DashboardFilters(**filters), settings))


@pytest.fixture
async def scene(h):
    """Eight tasks in every kind of state; the clock ends 30 s after the start."""
    start = h.clock.now()
    await h.queue("a", lease_seconds=60)
    t1 = await h.create("done", queue="a")
    h.clock.advance(5)
    t2 = await h.create("held", queue="a", owner=OWNER)
    h.clock.advance(5)
    first, second = await h.claim("a", limit=2)
    h.clock.advance(2)
    await h.do(lambda u: runs.start(u, first.run.id, first.claim_token))
    await h.complete(first)
    h.clock.advance(8)
    t3 = await h.create("waiting", queue="b")
    await h.create("approval", queue="b", approval_policy="required")
    await h.create("depends", depends_on=[t3.id])
    await h.queue("c", max_attempts=1)
    await h.create("fails", queue="c")
    await h.fail(await h.claim_one("c"))
    await h.create("draft", draft=True)
    t8 = await h.create("canceled", queue="b")
    await h.do(lambda u: tasks.cancel(u, t8.id))
    h.clock.advance(10)
    return {"start": start, "done": t1, "held": t2, "held_claim": second, "waiting": t3}


async def test_the_dashboard_counts_a_scripted_scene(h, scene):
    d = await observe(h)
    start = scene["start"]
    assert d.observed_at == start + timedelta(seconds=30)
    assert d.tasks_by_status == {
        "draft": 1,
        "blocked": 2,
        "scheduled": 0,
        "ready": 1,
        "in_progress": 1,
        "on_hold": 0,
        "completed": 1,
        "failed": 1,
        "skipped": 0,
        "canceled": 1,
    }
    assert d.tasks_total == 8
    assert d.blocked_by_reason == {"approval": 1, "dependencies": 1}
    assert d.awaiting_approval == 1
    assert d.runs_by_status == {
        "queued": 1,
        "claimed": 1,
        "starting": 0,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "canceled": 1,
    }
    assert (d.runs_total, d.active_runs_total, d.forced_stops) == (5, 2, 1)
    shares = {s.status: s.share_percent for s in d.status_breakdown}
    assert (shares["blocked"], shares["completed"], shares["skipped"]) == (25.0, 12.5, 0.0)
    assert [s.status for s in d.status_breakdown][:3] == ["draft", "blocked", "scheduled"]

    held, waiting = d.active_runs
    assert (held.task.id, held.run.status, held.age_ms, held.stuck, held.health_status) == (
        scene["held"].id,
        "claimed",
        25_000,
        False,
        "healthy",
    )
    assert held.max_attempts == 3  # the queue's default
    assert held.last_activity_at == start + timedelta(seconds=10)
    assert (waiting.task.id, waiting.run.status, waiting.age_ms, waiting.health_status) == (
        scene["waiting"].id,
        "queued",
        10_000,
        "waiting",
    )

    assert [(q.queue, q.count, q.oldest_queued_at, q.oldest_age_ms) for q in d.queue.depth] == [
        ("b", 1, start + timedelta(seconds=20), 10_000)
    ]
    assert (d.queue.total, d.queue.backlog_warning, d.queue.backlog_status, d.queue.backlog_threshold_ms) == (
        1,
        False,
        "ok",
        300_000,
    )
    # Claims waited 10 s, 5 s and 0 s; the one run that started did so 2 s after its claim.
    assert (d.claim_latency.average_ms, d.claim_latency.maximum_ms, d.claim_latency.samples) == (5000.0, 10000.0, 3)
    assert (d.start_latency.average_ms, d.start_latency.maximum_ms, d.start_latency.samples) == (2000.0, 2000.0, 1)
    f = d.freshness
    assert (f.latest_activity_at, f.age_ms, f.has_live_work, f.stale, f.status) == (
        start + timedelta(seconds=20),
        10_000,
        True,
        False,
        "live",
    )
    assert (d.health.status, d.health.stuck_runs, d.health.active_orphan_runs, d.health.queue_backlog) == (
        "healthy",
        0,
        0,
        False,
    )
    assert (d.cards.blocked_health, d.cards.failed_health, d.cards.in_progress_health) == (
        "attention",
        "attention",
        "healthy",
    )


async def test_stuck_runs_backlogs_and_staleness_show_before_the_ticker_acts(h, scene):
    h.clock.advance(100)  # the held run's lease ran out 60 s ago; nobody has ticked
    quick = DashboardSettings(backlog_threshold_seconds=60, stale_after_seconds=60, stuck_after_seconds=600)
    d = await observe(h, quick)
    held, waiting = d.active_runs
    assert (held.stuck, held.health_status) == (True, "stuck")
    assert waiting.health_status == "backlogged"
    assert (d.health.status, d.health.stuck_runs, d.health.queue_backlog) == ("critical", 1, True)
    assert (d.queue.backlog_warning, d.queue.backlog_status) == (True, "backlogged")
    assert (d.freshness.stale, d.freshness.status, d.freshness.age_ms) == (True, "stale", 110_000)
    assert d.cards.in_progress_health == "critical"

    await h.advance(0)  # the ticker ends the lapsed lease: a forced stop, and a retry after its backoff
    d = await observe(h, quick)
    assert (d.health.stuck_runs, d.forced_stops) == (0, 2)
    assert d.runs_by_status["failed"] == 2
    assert d.freshness.status == "idle"
    assert d.tasks_by_status["scheduled"] == 1
    assert [r.health_status for r in d.active_runs] == ["backlogged", "scheduled"]


async def test_a_silent_holder_is_stuck_even_with_a_long_lease(h):
    await h.queue("long", lease_seconds=3600)
    await h.create(queue="long")
    claim = await h.claim_one("long")
    h.clock.advance(301)
    d = await observe(h)
    assert [(r.run.id, r.stuck) for r in d.active_runs] == [(claim.run.id, True)]
    await h.heartbeat(claim)
    assert (await observe(h)).health.stuck_runs == 0


async def test_filters_narrow_every_number(h, scene):
    by_queue = await observe(h, queue="b")
    assert by_queue.tasks_total == 3
    assert (by_queue.runs_total, by_queue.runs_by_status["queued"], by_queue.forced_stops) == (2, 1, 1)
    assert [r.task.id for r in by_queue.active_runs] == [scene["waiting"].id]

    by_owner = await observe(h, owner_kind=OWNER.kind, owner_ref=OWNER.ref)
    assert (by_owner.tasks_total, by_owner.runs_total, by_owner.active_runs_total) == (1, 1, 1)
    assert [r.task.id for r in by_owner.active_runs] == [scene["held"].id]
    assert by_owner.queue.depth == []
    assert by_owner.claim_latency.samples == 1

    nothing = await observe(h, queue="nowhere")
    assert (nothing.tasks_total, nothing.runs_total, nothing.active_runs, nothing.freshness.status) == (
        0,
        0,
        [],
        "idle",
    )
    assert (await observe(h, origin_kind="cli")).tasks_total == 0
    assert (await observe(h, origin_kind="http")).tasks_total == 8
    assert (await observe(h, scope="global")).tasks_total == 0


async def test_the_active_list_is_bounded(h):
    for i in range(5):
        await h.create(f"t{i}", queue="q")
    await h.claim("q", limit=2)
    d = await observe(h, DashboardSettings(active_limit=3, latency_samples=1))
    assert [r.run.status for r in d.active_runs] == ["claimed", "claimed", "queued"]
    assert d.active_runs_total == 5
    assert d.claim_latency.samples == 1


async def test_the_dashboard_is_per_workspace(h, scene):
    other = await h.other_workspace("globex")
    d = await observe(other)
    assert (d.tasks_total, d.runs_total, d.queue.depth, d.freshness.latest_activity_at) == (0, 0, [], None)
