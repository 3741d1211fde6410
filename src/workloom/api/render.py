"""Resources as the native API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workloom.domain.actors import Actor
from workloom.domain.models import Claim, Event, Queue, Run, Task
from workloom.engine.tasks import TreeNode


def when(value: datetime | None) -> str | None:
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
