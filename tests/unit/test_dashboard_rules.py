"""Dashboard rules: shares, latencies, run health, backlog, freshness and overall health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workloom.domain.actors import Actor
from workloom.domain.dashboard import (
    DashboardSettings,
    QueueDepth,
    breakdown,
    cards,
    freshness,
    health,
    latencies,
    queue_summary,
    run_health,
    run_stuck,
)
from workloom.domain.models import Run
from workloom.domain.task_states import TASK_STATUSES

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = DashboardSettings(backlog_threshold_seconds=60, stale_after_seconds=60, stuck_after_seconds=120)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(status: str = "queued", **fields: object) -> Run:
    values: dict[str, object] = {
        "id": "run_1",
        "workspace_id": "ws",
        "task_id": "task_1",
        "queue_id": "q_1",
        "attempt": 1,
        "status": status,
        "priority_rank": 1,
        "available_at": T0,
        "queued_at": T0,
        "claimed_at": None,
        "started_at": None,
        "ended_at": None,
        "heartbeat_at": None,
        "lease_until": None,
        "claim_token_hash": None,
        "claimed_by": None,
        "end_reason": None,
        "error": None,
        "result": None,
        "progress": None,
        "usage": None,
        "metadata": None,
    }
    if status != "queued":
        values.update(claimed_at=T0, heartbeat_at=T0, lease_until=at(300), claimed_by=Actor("agent_session", "w"))
    values.update(fields)
    return Run(**values)  # type: ignore[arg-type]


def test_shares_cover_every_status_and_round_to_a_tenth():
    shares = breakdown({"ready": 1, "completed": 2})
    assert [s.status for s in shares] == list(TASK_STATUSES)
    by = {s.status: s.share_percent for s in shares}
    assert (by["ready"], by["completed"], by["draft"]) == (33.3, 66.7, 0.0)
    assert all(s.share_percent == 0.0 for s in breakdown({}))


def test_latencies_count_from_claimable_to_claim_and_claim_to_start():
    claim, start = latencies([(T0, at(4), at(5)), (T0, at(2), None), (at(10), at(9), None)])
    assert (claim.average_ms, claim.maximum_ms, claim.samples) == (2000.0, 4000.0, 3)
    assert (start.average_ms, start.maximum_ms, start.samples) == (1000.0, 1000.0, 1)
    empty, _ = latencies([])
    assert (empty.average_ms, empty.maximum_ms, empty.samples) == (None, None, 0)


def test_a_held_run_is_stuck_when_its_lease_ran_out_or_it_went_silent():
    assert not run_stuck(run("running"), at(100), SETTINGS)
    assert run_stuck(run("running"), at(121), SETTINGS)  # no heartbeat for longer than 120 s
    assert run_stuck(run("claimed", lease_until=at(50), heartbeat_at=at(40)), at(50), SETTINGS)
    assert not run_stuck(run("queued"), at(1000), SETTINGS)
    assert run_health(run("running"), at(121), SETTINGS) == "stuck"
    assert run_health(run("starting"), at(10), SETTINGS) == "healthy"


def test_a_queued_run_waits_then_backlogs_unless_its_backoff_is_not_over():
    assert run_health(run(), at(60), SETTINGS) == "waiting"
    assert run_health(run(), at(61), SETTINGS) == "backlogged"
    assert run_health(run(available_at=at(100)), at(61), SETTINGS) == "scheduled"


def test_the_backlog_is_judged_by_the_oldest_claimable_run():
    depth = [QueueDepth("a", 2, at(50), 10_000), QueueDepth("b", 1, at(-5), 65_000)]
    summary = queue_summary(depth, at(60), SETTINGS)
    assert (summary.total, summary.oldest_queued_at, summary.oldest_age_ms) == (3, at(-5), 65_000)
    assert (summary.backlog_warning, summary.backlog_status, summary.backlog_threshold_ms) == (
        True,
        "backlogged",
        60_000,
    )
    assert queue_summary([], at(0), SETTINGS).backlog_status == "empty"


def test_freshness_is_stale_only_with_live_work_gone_quiet():
    assert freshness(at(100), at(0), True, SETTINGS).status == "stale"
    assert freshness(at(30), at(0), True, SETTINGS).status == "live"
    assert freshness(at(100), at(0), False, SETTINGS).status == "idle"
    assert freshness(at(100), None, False, SETTINGS).age_ms is None


def test_health_is_critical_for_stuck_work_and_attention_for_backlogs_or_staleness():
    calm = queue_summary([], at(0), SETTINGS)
    backlog = queue_summary([QueueDepth("a", 1, at(-100), 100_000)], at(0), SETTINGS)
    live = freshness(at(0), at(0), True, SETTINGS)
    assert health(0, 0, calm, live).status == "healthy"
    assert health(1, 0, calm, live).status == "critical"
    assert health(0, 1, calm, live).status == "critical"
    assert health(0, 0, backlog, live).status == "attention"
    assert health(0, 0, calm, freshness(at(100), at(0), True, SETTINGS)).status == "attention"
    assert cards(blocked=0, failed_tasks=0, failed_runs_waiting=1, stuck=0, orphans=0).failed_health == "attention"
    assert cards(blocked=2, failed_tasks=0, failed_runs_waiting=0, stuck=1, orphans=0).in_progress_health == "critical"
