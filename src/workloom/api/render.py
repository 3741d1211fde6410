"""Resources as the native API shows them."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from workloom.domain.actors import Actor
from workloom.domain.dashboard import ActiveRun, Dashboard, Latency
from workloom.domain.models import Claim, Event, Queue, Run, Task
from workloom.domain.triage import Inbox, InboxItem, TriageState
from workloom.engine.tasks import TreeNode


@functools.lru_cache(maxsize=4096)
def when(value: datetime | None) -> str | None:
    # Cached: the rows of one response share a handful of instants (the unit's "now" above all), and a
    # batch of claims renders a dozen per task.
    return value.isoformat().replace("+00:00", "Z") if value else None


def actor(value: Actor | None) -> dict[str, str] | None:
    return value.as_dict() if value else None


def task(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "identifier": t.identifier,
        "workspace_id": t.workspace_id,
        "title": t.title,
        "description": t.description,
        "scope": t.scope,
        "queue": t.queue,
        "status": t.status,
        "blocked_reason": t.blocked_reason,
        "priority": t.priority,
        "draft": t.draft,
        "approval_policy": t.approval_policy,
        "approval_state": t.approval_state,
        "parent_task_id": t.parent_task_id,
        "depends_on": t.depends_on,
        "max_attempts": t.max_attempts,
        "attempts": t.attempts,
        "data": t.data,
        "output": t.output,
        "error": t.error,
        "due_at": when(t.due_at),
        "overdue_at": when(t.overdue_at),
        "owner": actor(t.owner),
        "created_by": actor(t.created_by),
        "origin": actor(t.origin),
        "metadata": t.metadata,
        "created_at": when(t.created_at),
        "updated_at": when(t.updated_at),
        "closed_at": when(t.closed_at),
        "last_activity_at": when(t.last_activity_at),
    }


def run(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "task_id": r.task_id,
        "queue": r.queue,
        "attempt": r.attempt,
        "status": r.status,
        "available_at": when(r.available_at),
        "queued_at": when(r.queued_at),
        "claimed_at": when(r.claimed_at),
        "started_at": when(r.started_at),
        "ended_at": when(r.ended_at),
        "heartbeat_at": when(r.heartbeat_at),
        "lease_until": when(r.lease_until),
        "claimed_by": actor(r.claimed_by),
        "end_reason": r.end_reason,
        "error": r.error,
        "result": r.result,
        "progress": r.progress,
        "usage": r.usage,
        "metadata": r.metadata,
        "session_id": r.session_id,
        "origin": actor(r.origin),
        "idempotency_key": r.idempotency_key,
    }


def claim(c: Claim) -> dict[str, Any]:
    return {"task": task(c.task), "run": run(c.run), "claim_token": c.claim_token, "lease_until": when(c.lease_until)}


def event(e: Event) -> dict[str, Any]:
    return {
        "sequence": e.sequence,
        "task_sequence": e.task_sequence,
        "type": e.type,
        "task_id": e.task_id,
        "run_id": e.run_id,
        "actor": actor(e.actor),
        "origin": actor(e.origin),
        "payload": e.payload,
        "created_at": when(e.created_at),
    }


def queue(q: Queue) -> dict[str, Any]:
    return {
        "id": q.id,
        "name": q.name,
        "description": q.description,
        "lease_seconds": q.lease_seconds,
        "max_attempts": q.max_attempts,
        "initial_interval_seconds": q.initial_interval_seconds,
        "backoff_coefficient": q.backoff_coefficient,
        "max_interval_seconds": q.max_interval_seconds,
        "start_mode": q.start_mode,
        "created_at": when(q.created_at),
        "updated_at": when(q.updated_at),
    }


def tree(node: TreeNode) -> dict[str, Any]:
    return {"task": task(node.task), "children": [tree(child) for child in node.children]}


def items(values: list[dict[str, Any]], next_cursor: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"items": values, "next_cursor": next_cursor, **extra}


def triage(state: TriageState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "actor": actor(state.actor),
        "read": state.read,
        "dismissed": state.dismissed,
        "archived": state.archived,
        "read_at": when(state.read_at),
        "dismissed_at": when(state.dismissed_at),
        "archived_at": when(state.archived_at),
        "last_seen_activity_at": when(state.last_seen_activity_at),
        "updated_at": when(state.updated_at),
    }


def inbox_item(item: InboxItem) -> dict[str, Any]:
    return {
        "lane": item.lane,
        "unread": item.unread,
        "reason": item.reason,
        "error": item.error,
        "task": task(item.task),
        "triage": triage(item.triage),
        "run": run(item.run) if item.run else None,
    }


def inbox(box: Inbox) -> dict[str, Any]:
    return {
        "items": [inbox_item(i) for i in box.items],
        "lanes": [{"lane": c.lane, "count": c.count, "unread_count": c.unread_count} for c in box.lanes],
        "total": box.total,
        "unread_total": box.unread_total,
        "archived_total": box.archived_total,
    }


def _latency(value: Latency) -> dict[str, Any]:
    return {"average_ms": value.average_ms, "maximum_ms": value.maximum_ms, "samples": value.samples}


def _task_brief(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "identifier": t.identifier,
        "title": t.title,
        "status": t.status,
        "priority": t.priority,
        "scope": t.scope,
        "queue": t.queue,
        "owner": actor(t.owner),
    }


def _active(item: ActiveRun) -> dict[str, Any]:
    return {
        "run": run(item.run),
        "task": _task_brief(item.task),
        "max_attempts": item.max_attempts,
        "age_ms": item.age_ms,
        "last_activity_at": when(item.last_activity_at),
        "stuck": item.stuck,
        "health_status": item.health_status,
    }


def dashboard(d: Dashboard) -> dict[str, Any]:
    q, f, h = d.queue, d.freshness, d.health
    return {
        "observed_at": when(d.observed_at),
        "tasks": {
            "total": d.tasks_total,
            "by_status": d.tasks_by_status,
            "blocked_by_reason": d.blocked_by_reason,
            "awaiting_approval": d.awaiting_approval,
        },
        "runs": {
            "total": d.runs_total,
            "by_status": d.runs_by_status,
            "active": d.active_runs_total,
            "forced_stops": d.forced_stops,
        },
        "status_breakdown": [
            {"status": s.status, "count": s.count, "share_percent": s.share_percent} for s in d.status_breakdown
        ],
        "active_runs": {"total": d.active_runs_total, "items": [_active(i) for i in d.active_runs]},
        "queue": {
            "total": q.total,
            "depth": [
                {
                    "queue": depth.queue,
                    "count": depth.count,
                    "oldest_queued_at": when(depth.oldest_queued_at),
                    "oldest_age_ms": depth.oldest_age_ms,
                }
                for depth in q.depth
            ],
            "oldest_queued_at": when(q.oldest_queued_at),
            "oldest_age_ms": q.oldest_age_ms,
            "backlog_threshold_ms": q.backlog_threshold_ms,
            "backlog_warning": q.backlog_warning,
            "backlog_status": q.backlog_status,
        },
        "latency": {"claim": _latency(d.claim_latency), "start": _latency(d.start_latency)},
        "freshness": {
            "observed_at": when(f.observed_at),
            "latest_activity_at": when(f.latest_activity_at),
            "age_ms": f.age_ms,
            "has_live_work": f.has_live_work,
            "stale_after_ms": f.stale_after_ms,
            "stale": f.stale,
            "status": f.status,
        },
        "health": {
            "status": h.status,
            "stuck_runs": h.stuck_runs,
            "active_orphan_runs": h.active_orphan_runs,
            "queue_backlog": h.queue_backlog,
        },
        "cards": {
            "blocked": d.cards.blocked_health,
            "failed": d.cards.failed_health,
            "in_progress": d.cards.in_progress_health,
        },
    }
