"""The observer's shapes: the inbox, triage state and the dashboard, in AGH's words.

The engine counts over Workloom's canonical statuses; here those counts are folded onto AGH's statuses
through ``vocab.TASK_STATUS`` (e.g. ``scheduled`` counts as ``pending``, ``skipped`` as ``canceled``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from workloom.api.render import actor, when
from workloom.dialects.agh.shapes import Facts, run_brief, task_ref
from workloom.dialects.agh.vocab import AGH_TASK_STATUSES, RUN_STATUS, TASK_STATUS
from workloom.domain.dashboard import ActiveRun, Dashboard, Latency, QueueDepth
from workloom.domain.triage import Inbox, InboxItem, TriageState


def triage(state: TriageState) -> dict[str, Any]:
    return {
        "actor": actor(state.actor),
        "archived": state.archived,
        "dismissed": state.dismissed,
        "last_seen_activity_at": when(state.last_seen_activity_at),
        "read": state.read,
        "task_id": state.task_id,
        "updated_at": when(state.updated_at),
    }


def inbox_item(item: InboxItem, facts: Facts) -> dict[str, Any]:
    return {
        "approval_policy": item.task.approval_policy,
        "approval_state": item.task.approval_state,
        "blocking_reason": item.reason,
        "lane": item.lane,
        "latest_activity_at": when(item.task.last_activity_at),
        "run": run_brief(item.run, facts) if item.run else None,
        "task": task_ref(item.task),
        "triage": triage(item.triage),
    }


def inbox(found: Inbox, facts: Facts) -> dict[str, Any]:
    by_lane: dict[str, list[dict[str, Any]]] = {count.lane: [] for count in found.lanes}
    for item in found.items:
        by_lane[item.lane].append(inbox_item(item, facts))
    return {
        "archived_total": found.archived_total,
        "groups": [
            {"count": count.count, "items": by_lane[count.lane], "lane": count.lane, "unread_count": count.unread_count}
            for count in found.lanes
            if found.filters.lane in (None, count.lane)
        ],
        "total": found.total,
        "unread_total": found.unread_total,
    }


def _folded(by_canonical: dict[str, int]) -> Counter[str]:
    folded: Counter[str] = Counter({status: 0 for status in AGH_TASK_STATUSES})
    for status, count in by_canonical.items():
        folded[TASK_STATUS[status]] += count
    return folded


def _latency(value: Latency) -> dict[str, Any]:
    return {"average_ms": value.average_ms, "maximum_ms": value.maximum_ms, "samples": value.samples}


def _active_item(item: ActiveRun) -> dict[str, Any]:
    run, task = item.run, item.task
    return {
        "age_ms": item.age_ms,
        "attempt": run.attempt,
        "error": run.error,
        "health_status": item.health_status,
        "last_activity_at": when(item.last_activity_at),
        "max_attempts": item.max_attempts,
        "network_channel": run.queue,
        "run_id": run.id,
        "run_status": RUN_STATUS[run.status],
        "scope": task.scope,
        "session_id": run.session_id,
        "stuck": item.stuck,
        "task_id": task.id,
        "task_identifier": task.identifier,
        "task_owner": actor(task.owner),
        "task_priority": task.priority,
        "task_status": TASK_STATUS[task.status],
        "task_title": task.title,
        "workspace_id": task.workspace_id,
    }


def _depth(entry: QueueDepth) -> dict[str, Any]:
    return {
        "count": entry.count,
        "network_channel": entry.queue,
        "oldest_queue_age_ms": entry.oldest_age_ms,
        "oldest_queued_at": when(entry.oldest_queued_at),
    }


def dashboard(d: Dashboard) -> dict[str, Any]:
    tasks = _folded(d.tasks_by_status)
    runs = d.runs_by_status
    shares: dict[str, float] = dict.fromkeys(AGH_TASK_STATUSES, 0.0)
    for share in d.status_breakdown:
        shares[TASK_STATUS[share.status]] += share.share_percent
    return {
        "active_runs": {
            "claimed": runs["claimed"],
            "items": [_active_item(item) for item in d.active_runs],
            "queued": runs["queued"],
            "running": runs["running"],
            "starting": runs["starting"],
            "total": d.active_runs_total,
        },
        "cards": {
            "blocked": {
                "awaiting_approval": d.awaiting_approval,
                "awaiting_dependencies": d.blocked_by_reason.get("dependencies", 0),
                "health_status": d.cards.blocked_health,
                "tasks": tasks["blocked"],
            },
            "failed": {
                "failed_runs": runs["failed"],
                "forced_stops": d.forced_stops,
                "health_status": d.cards.failed_health,
                "tasks": tasks["failed"],
            },
            "in_progress": {
                "active_runs": d.active_runs_total,
                "claimed_runs": runs["claimed"],
                "health_status": d.cards.in_progress_health,
                "queued_runs": runs["queued"],
                "running_runs": runs["running"],
                "starting_runs": runs["starting"],
                "tasks": tasks["in_progress"],
            },
            "latency": {"claim_latency_ms": _latency(d.claim_latency), "start_latency_ms": _latency(d.start_latency)},
        },
        "freshness": {
            "age_ms": d.freshness.age_ms,
            "has_live_work": d.freshness.has_live_work,
            "latest_activity_at": when(d.freshness.latest_activity_at),
            "observed_at": when(d.freshness.observed_at),
            "stale": d.freshness.stale,
            "stale_after_ms": d.freshness.stale_after_ms,
            "status": d.freshness.status,
        },
        "health": {
            "active_orphan_runs": d.health.active_orphan_runs,
            "queue_backlog": d.health.queue_backlog,
            "status": d.health.status,
            "stuck_runs": d.health.stuck_runs,
        },
        "queue": {
            "backlog_status": d.queue.backlog_status,
            "backlog_threshold_ms": d.queue.backlog_threshold_ms,
            "backlog_warning": d.queue.backlog_warning,
            "depth": [_depth(entry) for entry in d.queue.depth],
            "oldest_queue_age_ms": d.queue.oldest_age_ms,
            "oldest_queued_at": when(d.queue.oldest_queued_at),
            "total": d.queue.total,
        },
        "status_breakdown": [
            {"count": tasks[status], "share_percent": round(shares[status], 1), "status": status}
            for status in AGH_TASK_STATUSES
        ],
        "totals": {
            "active_runs": d.active_runs_total,
            "awaiting_approval_tasks": d.awaiting_approval,
            "blocked_tasks": tasks["blocked"],
            "canceled_runs": runs["canceled"],
            "canceled_tasks": tasks["canceled"],
            "claimed_runs": runs["claimed"],
            "completed_runs": runs["completed"],
            "completed_tasks": tasks["completed"],
            "dependency_blocked_tasks": d.blocked_by_reason.get("dependencies", 0),
            "draft_tasks": tasks["draft"],
            "failed_runs": runs["failed"],
            "failed_tasks": tasks["failed"],
            "in_progress_tasks": tasks["in_progress"],
            "pending_tasks": tasks["pending"],
            "queued_runs": runs["queued"],
            "ready_tasks": tasks["ready"],
            "running_runs": runs["running"],
            "runs_total": d.runs_total,
            "starting_runs": runs["starting"],
            "tasks_total": d.tasks_total,
        },
    }
