"""The observer dashboard: counted in a few cheap queries, judged by the rules in ``domain.dashboard``.

Cheap enough to poll every few seconds with 100k tasks: two grouped counts over covering indexes, the
held runs (as many as there are workers), the claimable runs grouped per queue, and bounded lists
(``active_limit`` active runs, ``latency_samples`` recent claims). See ``bench/dashboard.py``.
"""

from __future__ import annotations

from datetime import timedelta

from workloom.domain import dashboard as rules
from workloom.domain.dashboard import ActiveRun, Dashboard, DashboardFilters, DashboardSettings, QueueDepth
from workloom.domain.errors import FieldError, ValidationFailed
from workloom.domain.models import Run
from workloom.domain.run_states import RUN_STATUSES
from workloom.domain.task_states import FINAL_TASK_STATUSES, TASK_STATUSES
from workloom.engine.unit import Unit
from workloom.store import observe as store
from workloom.store import queues as queue_store
from workloom.store import tasks as task_store
from workloom.store.observe import ObserveFilters

# Runs ended by someone other than their holder.
FORCED_END_REASONS = ("lease_expired", "run_canceled", "task_canceled")
NO_SUCH_QUEUE = "-"  # a queue id no queue has: filtering by an unknown queue finds nothing


async def observe(
    u: Unit, filters: DashboardFilters | None = None, settings: DashboardSettings | None = None
) -> Dashboard:
    u.principal.require("tasks.read")
    filters = filters or DashboardFilters()
    settings = settings or DashboardSettings()
    if settings.active_limit < 0 or settings.latency_samples < 0:
        raise ValidationFailed("limits must not be negative", [FieldError("settings", "use 0 or more")])
    now = u.now
    where = await _store_filters(u, filters)

    task_rows = await store.observe_task_counts(u.conn, u.workspace_id, where)
    by_status: dict[str, int] = {}
    blocked_by_reason: dict[str, int] = {}
    awaiting_approval = 0
    for status, reason, approval_state, count in task_rows:
        by_status[status] = by_status.get(status, 0) + count
        if status == "blocked" and reason is not None:
            blocked_by_reason[reason] = blocked_by_reason.get(reason, 0) + count
        if approval_state == "pending" and status != "draft" and status not in FINAL_TASK_STATUSES:
            awaiting_approval += count
    tasks_by_status = rules.full_counts(by_status, TASK_STATUSES)

    run_rows = await store.observe_run_counts(u.conn, u.workspace_id, where)
    runs_found: dict[str, int] = {}
    forced = 0
    for status, end_reason, count in run_rows:
        runs_found[status] = runs_found.get(status, 0) + count
        if end_reason in FORCED_END_REASONS and status in ("failed", "canceled"):
            forced += count
    runs_by_status = rules.full_counts(runs_found, RUN_STATUSES)
    active_total = sum(runs_by_status[s] for s in ("queued", "claimed", "starting", "running"))

    held = await store.observe_held_runs(u.conn, u.workspace_id, where, settings.active_limit)
    queued = await store.observe_queued_runs(u.conn, u.workspace_id, where, settings.active_limit - len(held))
    active = await _active_items(u, held + queued, settings)

    summary = await store.observe_held_summary(
        u.conn, u.workspace_id, where, now=now, stuck_after=timedelta(seconds=settings.stuck_after_seconds)
    )
    depth = [
        QueueDepth(name, count, oldest, rules.age_ms(now, oldest))
        for name, count, oldest in await store.observe_queue_depths(u.conn, u.workspace_id, where, now)
    ]
    queue = rules.queue_summary(depth, now, settings)
    claim_latency, start_latency = rules.latencies(
        await store.observe_claim_samples(u.conn, u.workspace_id, where, settings.latency_samples)
    )
    latest = await store.observe_latest_activity(u.conn, u.workspace_id, where)
    if summary.latest_heartbeat_at is not None and (latest is None or summary.latest_heartbeat_at > latest):
        latest = summary.latest_heartbeat_at
    has_live_work = runs_by_status["claimed"] + runs_by_status["starting"] + runs_by_status["running"] > 0
    freshness = rules.freshness(now, latest, has_live_work, settings)
    health = rules.health(summary.stuck, summary.orphans, queue, freshness)
    return Dashboard(
        observed_at=now,
        filters=filters,
        settings=settings,
        tasks_by_status=tasks_by_status,
        tasks_total=sum(tasks_by_status.values()),
        blocked_by_reason=blocked_by_reason,
        awaiting_approval=awaiting_approval,
        runs_by_status=runs_by_status,
        runs_total=sum(runs_by_status.values()),
        forced_stops=forced,
        status_breakdown=rules.breakdown(tasks_by_status),
        active_runs=active,
        active_runs_total=active_total,
        queue=queue,
        claim_latency=claim_latency,
        start_latency=start_latency,
        freshness=freshness,
        health=health,
        cards=rules.cards(
            tasks_by_status["blocked"],
            tasks_by_status["failed"],
            tasks_by_status["scheduled"],
            summary.stuck,
            summary.orphans,
        ),
    )


async def _store_filters(u: Unit, filters: DashboardFilters) -> ObserveFilters:
    queue_id = None
    if filters.queue is not None:
        found = await queue_store.queue_ids_by_name(u.conn, u.workspace_id, [filters.queue])
        queue_id = found.get(filters.queue, NO_SUCH_QUEUE)
    return ObserveFilters(filters.scope, filters.owner_kind, filters.owner_ref, filters.origin_kind, queue_id)


async def _active_items(u: Unit, runs: list[Run], settings: DashboardSettings) -> list[ActiveRun]:
    tasks = {t.id: t for t in await task_store.task_get_many(u.conn, u.workspace_id, [r.task_id for r in runs])}
    queue_ids = {r.queue_id for r in runs}
    max_attempts = {q.id: q.max_attempts for q in await queue_store.queue_get_many(u.conn, u.workspace_id, queue_ids)}
    items = []
    for run in runs:
        task = tasks[run.task_id]
        items.append(
            ActiveRun(
                run=run,
                task=task,
                max_attempts=task.max_attempts or max_attempts.get(run.queue_id),
                age_ms=rules.age_ms(u.now, run.queued_at) or 0,
                last_activity_at=rules.run_last_activity(run),
                stuck=rules.run_stuck(run, u.now, settings),
                health_status=rules.run_health(run, u.now, settings),
            )
        )
    return items
