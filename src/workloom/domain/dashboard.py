"""The observer dashboard: what the numbers mean and how health is judged, apart from how they are counted.

The engine counts (grouped counts over indexed columns and a few bounded lists); this module turns
the counts into the dashboard: shares, latencies, per-run health, freshness and an overall status.

Vocabulary of every ``health_status``: ``healthy``, ``attention`` (something waits for a person or is
slow), ``critical`` (work is stuck or orphaned). Of a run's ``health_status``: ``healthy`` (held, lease
current, heartbeating), ``stuck``, ``waiting`` (queued, claimable), ``backlogged`` (queued and claimable
for longer than the backlog threshold), ``scheduled`` (queued, not claimable before its backoff ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from workloom.domain.models import Run, Task
from workloom.domain.task_states import TASK_STATUSES

Health = Literal["healthy", "attention", "critical"]


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Thresholds; every one can be set per request."""

    backlog_threshold_seconds: float = 300.0  # a claimable run waiting longer is a backlog
    stale_after_seconds: float = 300.0  # live work with no activity for longer is stale
    stuck_after_seconds: float = 300.0  # a held run without a heartbeat for longer is stuck
    active_limit: int = 50  # at most this many active runs are listed
    latency_samples: int = 200  # latencies are measured over this many most recent claims


@dataclass(frozen=True, slots=True)
class DashboardFilters:
    scope: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    queue: str | None = None  # the AGH ``network_channel``
    origin_kind: str | None = None

    @property
    def on_tasks(self) -> bool:
        """Whether any filter is on the task (so runs must be joined to their tasks)."""
        return any(v is not None for v in (self.scope, self.owner_kind, self.owner_ref, self.origin_kind))


@dataclass(slots=True)
class StatusShare:
    status: str
    count: int
    share_percent: float


@dataclass(slots=True)
class Latency:
    average_ms: float | None
    maximum_ms: float | None
    samples: int


@dataclass(slots=True)
class ActiveRun:
    run: Run
    task: Task
    max_attempts: int | None  # the task's, else its queue's
    age_ms: int  # since the run was queued
    last_activity_at: datetime  # the latest of its heartbeat, claim, start, queueing
    stuck: bool
    health_status: str


@dataclass(slots=True)
class QueueDepth:
    queue: str
    count: int  # runs claimable now
    oldest_queued_at: datetime | None  # since when the oldest of them has been claimable
    oldest_age_ms: int | None


@dataclass(slots=True)
class QueueSummary:
    depth: list[QueueDepth]
    total: int
    oldest_queued_at: datetime | None
    oldest_age_ms: int | None
    backlog_threshold_ms: int
    backlog_warning: bool
    backlog_status: str  # "empty" | "ok" | "backlogged"


@dataclass(slots=True)
class Freshness:
    observed_at: datetime
    latest_activity_at: datetime | None
    age_ms: int | None
    has_live_work: bool
    stale_after_ms: int
    stale: bool
    status: str  # "idle" (no live work) | "live" | "stale"


@dataclass(slots=True)
class HealthSummary:
    status: Health
    stuck_runs: int
    active_orphan_runs: int
    queue_backlog: bool


@dataclass(slots=True)
class Cards:
    """The dashboard's three cards; the counts they show are in ``Dashboard``."""

    blocked_health: Health
    failed_health: Health
    in_progress_health: Health


@dataclass(slots=True)
class Dashboard:
    observed_at: datetime
    filters: DashboardFilters
    settings: DashboardSettings
    tasks_by_status: dict[str, int]  # every task status, zeros included
    tasks_total: int
    blocked_by_reason: dict[str, int]  # dependencies, approval, …
    awaiting_approval: int  # open published tasks with approval pending
    runs_by_status: dict[str, int]  # every run status, zeros included
    runs_total: int
    forced_stops: int  # runs ended by someone other than their holder: lease expired, run or task canceled
    status_breakdown: list[StatusShare]
    active_runs: list[ActiveRun]  # held runs first (soonest lease end first), then queued by claim order
    active_runs_total: int
    queue: QueueSummary
    claim_latency: Latency  # claimed_at - available_at (when the run became claimable)
    start_latency: Latency  # started_at - claimed_at
    freshness: Freshness
    health: HealthSummary
    cards: Cards = field(default_factory=lambda: Cards("healthy", "healthy", "healthy"))


def millis(seconds: float) -> int:
    return round(seconds * 1000)


def age_ms(now: datetime, since: datetime | None) -> int | None:
    return None if since is None else max(millis((now - since).total_seconds()), 0)


def breakdown(counts: dict[str, int]) -> list[StatusShare]:
    total = sum(counts.values())
    return [
        StatusShare(status, counts.get(status, 0), round(counts.get(status, 0) * 100 / total, 1) if total else 0.0)
        for status in TASK_STATUSES
    ]


def full_counts(found: dict[str, int], statuses: tuple[str, ...]) -> dict[str, int]:
    return {status: found.get(status, 0) for status in statuses}


def latency(durations_ms: list[float]) -> Latency:
    if not durations_ms:
        return Latency(None, None, 0)
    return Latency(round(sum(durations_ms) / len(durations_ms), 1), round(max(durations_ms), 1), len(durations_ms))


def latencies(samples: list[tuple[datetime, datetime | None, datetime | None]]) -> tuple[Latency, Latency]:
    """From (available_at, claimed_at, started_at) of recent claims: claim and start latency."""
    claim = [max((c - a).total_seconds(), 0.0) * 1000 for a, c, _ in samples if c is not None]
    start = [max((s - c).total_seconds(), 0.0) * 1000 for _, c, s in samples if c is not None and s is not None]
    return latency(claim), latency(start)


def run_stuck(run: Run, now: datetime, settings: DashboardSettings) -> bool:
    """A held run whose lease ran out (the ticker has not ended it yet) or that stopped heartbeating."""
    if run.status not in ("claimed", "starting", "running"):
        return False
    if run.lease_until is not None and run.lease_until <= now:
        return True
    last = run.heartbeat_at or run.claimed_at
    return last is not None and (now - last).total_seconds() > settings.stuck_after_seconds


def run_health(run: Run, now: datetime, settings: DashboardSettings) -> str:
    if run.status == "queued":
        if run.available_at > now:
            return "scheduled"
        waited = (now - run.available_at).total_seconds()
        return "backlogged" if waited > settings.backlog_threshold_seconds else "waiting"
    return "stuck" if run_stuck(run, now, settings) else "healthy"


def run_last_activity(run: Run) -> datetime:
    return max(t for t in (run.queued_at, run.claimed_at, run.started_at, run.heartbeat_at) if t is not None)


def queue_summary(depth: list[QueueDepth], now: datetime, settings: DashboardSettings) -> QueueSummary:
    oldest = min((d.oldest_queued_at for d in depth if d.oldest_queued_at is not None), default=None)
    oldest_age = age_ms(now, oldest)
    threshold = millis(settings.backlog_threshold_seconds)
    warning = oldest_age is not None and oldest_age > threshold
    total = sum(d.count for d in depth)
    return QueueSummary(
        depth=depth,
        total=total,
        oldest_queued_at=oldest,
        oldest_age_ms=oldest_age,
        backlog_threshold_ms=threshold,
        backlog_warning=warning,
        backlog_status="empty" if total == 0 else ("backlogged" if warning else "ok"),
    )


def freshness(
    now: datetime, latest_activity_at: datetime | None, has_live_work: bool, settings: DashboardSettings
) -> Freshness:
    age = age_ms(now, latest_activity_at)
    stale_after = millis(settings.stale_after_seconds)
    stale = has_live_work and (age is None or age > stale_after)
    return Freshness(
        observed_at=now,
        latest_activity_at=latest_activity_at,
        age_ms=age,
        has_live_work=has_live_work,
        stale_after_ms=stale_after,
        stale=stale,
        status="stale" if stale else ("live" if has_live_work else "idle"),
    )


def health(stuck: int, orphans: int, queue: QueueSummary, fresh: Freshness) -> HealthSummary:
    """Critical when work is stuck or orphaned; attention when the queue backs up or live work goes quiet."""
    status: Health = "healthy"
    if stuck or orphans:
        status = "critical"
    elif queue.backlog_warning or fresh.stale:
        status = "attention"
    return HealthSummary(status, stuck, orphans, queue.backlog_warning)


def cards(blocked: int, failed_tasks: int, failed_runs_waiting: int, stuck: int, orphans: int) -> Cards:
    """Blocked and failed work waits for a person (attention); stuck or orphaned runs are critical."""
    return Cards(
        blocked_health="attention" if blocked else "healthy",
        failed_health="attention" if failed_tasks or failed_runs_waiting else "healthy",
        in_progress_health="critical" if stuck or orphans else "healthy",
    )
