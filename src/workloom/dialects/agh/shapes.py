"""Workloom's resources in AGH's shapes: field names, nesting and vocabulary, nothing decided here.

Each function renders one of the document's objects. Fields AGH shows that Workloom has no notion of
(coordination channels) are present as ``null``. ``Facts`` carries the batch reads a shape needs
beyond the task itself (active run, counts, dependency edges, effective max attempts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workloom.api.render import actor, when
from workloom.dialects.agh.vocab import DEPENDENCY_KIND, RUN_STATUS, TASK_STATUS
from workloom.domain.models import Claim, Event, Run, Task

# AGH coordinates agents through per-run channels; Workloom has none, so these are always null.
NO_COORDINATION: dict[str, None] = {"coordination_channel": None, "coordination_channel_id": None}


@dataclass(slots=True)
class Facts:
    """What the engine's batch reads said about a set of tasks (see ``reads.gather``)."""

    active: dict[str, Run] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    dependencies: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)
    related: dict[str, Task] = field(default_factory=dict)  # tasks named by dependency edges
    max_attempts: dict[str, int | None] = field(default_factory=dict)


def task_ref(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "identifier": t.identifier,
        "owner": actor(t.owner),
        "priority": t.priority,
        "scope": t.scope,
        "status": TASK_STATUS[t.status],
        "title": t.title,
        "workspace_id": t.workspace_id,
    }


def _task_common(t: Task, max_attempts: int | None) -> dict[str, Any]:
    return {
        **task_ref(t),
        "approval_policy": t.approval_policy,
        "approval_state": t.approval_state,
        "closed_at": when(t.closed_at),
        "created_at": when(t.created_at),
        "created_by": actor(t.created_by),
        "draft": t.draft,
        "max_attempts": max_attempts,
        "network_channel": t.queue,
        "origin": actor(t.origin),
        "parent_task_id": t.parent_task_id,
        "updated_at": when(t.updated_at),
    }


def task_record(t: Task, facts: Facts) -> dict[str, Any]:
    """The task as stored: what create, update and the transitions answer."""
    return {
        **_task_common(t, facts.max_attempts.get(t.id, t.max_attempts)),
        "description": t.description,
        "metadata": t.metadata,
    }


def task_summary(t: Task, facts: Facts) -> dict[str, Any]:
    """The enriched task of listings: with its active run, counts and dependency edges."""
    children, dependency_count = facts.counts.get(t.id, (0, 0))
    active = facts.active.get(t.id)
    return {
        **_task_common(t, facts.max_attempts.get(t.id, t.max_attempts)),
        "active_run": run_brief(active, facts) if active else None,
        "child_count": children,
        "dependencies": dependency_references(t.id, facts),
        "dependency_count": dependency_count,
        "last_activity_at": when(t.last_activity_at),
    }


def dependency_edges(task_id: str, facts: Facts) -> list[dict[str, Any]]:
    return [
        {"created_at": when(created), "depends_on_task_id": dep, "kind": DEPENDENCY_KIND, "task_id": task_id}
        for dep, created in facts.dependencies.get(task_id, [])
    ]


def dependency_references(task_id: str, facts: Facts) -> list[dict[str, Any]]:
    return [
        {**edge, "depends_on": task_ref(facts.related[edge["depends_on_task_id"]])}
        if edge["depends_on_task_id"] in facts.related
        else {**edge, "depends_on": None}
        for edge in dependency_edges(task_id, facts)
    ]


def task_detail(t: Task, facts: Facts, children: list[Task], runs: list[Run], events: list[Event]) -> dict[str, Any]:
    return {
        "children": [task_summary(child, facts) for child in children],
        "dependencies": dependency_edges(t.id, facts),
        "dependency_references": dependency_references(t.id, facts),
        "events": [event_record(e) for e in events],
        "runs": [run_full(r) for r in runs],
        "summary": task_summary(t, facts),
        "task": task_record(t, facts),
    }


def event_record(e: Event) -> dict[str, Any]:
    return {
        "actor": actor(e.actor),
        "event_type": e.type,
        "id": str(e.sequence),
        "origin": actor(e.origin),
        "payload": e.payload,
        "run_id": e.run_id,
        "task_id": e.task_id,
        "timestamp": when(e.created_at),
    }


def _run_common(r: Run) -> dict[str, Any]:
    return {
        "attempt": r.attempt,
        "claim_token_hash": r.claim_token_hash,
        "claimed_at": when(r.claimed_at),
        "claimed_by": actor(r.claimed_by),
        **NO_COORDINATION,
        "ended_at": when(r.ended_at),
        "error": r.error,
        "heartbeat_at": when(r.heartbeat_at),
        "id": r.id,
        "lease_until": when(r.lease_until),
        "queued_at": when(r.queued_at),
        "session_id": r.session_id,
        "started_at": when(r.started_at),
        "status": RUN_STATUS[r.status],
        "task_id": r.task_id,
    }


def run_full(r: Run) -> dict[str, Any]:
    return {
        **_run_common(r),
        "idempotency_key": r.idempotency_key,
        "metadata": r.metadata,
        "network_channel": r.queue,
        "origin": actor(r.origin),
        "result": r.result,
    }


def run_brief(r: Run, facts: Facts) -> dict[str, Any]:
    """A run as shown inside a task, tree node, timeline item or inbox item."""
    return {**_run_common(r), "max_attempts": facts.max_attempts.get(r.task_id)}


def lease(r: Run) -> dict[str, Any]:
    return {
        "claim_token_hash": r.claim_token_hash,
        "claimed_by": actor(r.claimed_by),
        **NO_COORDINATION,
        "heartbeat_at": when(r.heartbeat_at),
        "lease_until": when(r.lease_until),
        "run_id": r.id,
        "session_id": r.session_id,
        "status": RUN_STATUS[r.status],
        "task_id": r.task_id,
    }


def claim(c: Claim) -> dict[str, Any]:
    """A claim as AGH hands it out: no token, only its hash (the agent is known by its API key)."""
    return {"coordination_channel": None, "lease": lease(c.run), "run": run_full(c.run), "task": task_ref(c.task)}


def timeline_item(e: Event, task: Task, runs: Mapping[str, Run], facts: Facts) -> dict[str, Any]:
    run = runs.get(e.run_id) if e.run_id else None
    return {
        "actor": actor(e.actor),
        "event_id": str(e.sequence),
        "event_type": e.type,
        "origin": actor(e.origin),
        "payload": e.payload,
        "run": run_brief(run, facts) if run else None,
        "sequence": e.task_sequence,
        "task": task_ref(task),
        "timestamp": when(e.created_at),
    }


def stream_message(e: Event, task: Task, runs: Mapping[str, Run], facts: Facts) -> dict[str, Any]:
    return {"sequence": e.task_sequence, "timeline": timeline_item(e, task, runs, facts), "type": e.type}


def tree_node(t: Task, depth: int, facts: Facts) -> dict[str, Any]:
    active = facts.active.get(t.id)
    return {
        "active_run": run_brief(active, facts) if active else None,
        "child_count": facts.counts.get(t.id, (0, 0))[0],
        "depth": depth,
        "last_activity_at": when(t.last_activity_at),
        "parent_task_id": t.parent_task_id,
        "task": task_ref(t),
    }


def usage_summary(
    usage: Mapping[str, Any], last_activity_at: datetime | None, last_event: str | None
) -> dict[str, Any]:
    return {
        "cost_currency": usage.get("cost_currency"),
        "input_tokens": usage.get("input_tokens", 0),
        "last_activity_at": when(last_activity_at),
        "last_event_type": last_event,
        "output_tokens": usage.get("output_tokens", 0),
        "tool_call_count": usage.get("tool_call_count", 0),
        "total_cost": usage.get("total_cost", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "turn_count": usage.get("turn_count", 0),
    }


def session(r: Run) -> dict[str, Any] | None:
    """The agent session attached to a run. Workloom keeps only its id, so the rest is what the run
    knows: the agent holding it, its channel; AGH's session name and state are unknown (null)."""
    if r.session_id is None:
        return None
    return {
        "agent_name": r.claimed_by.ref if r.claimed_by else None,
        "channel": r.queue,
        "created_at": None,
        "name": None,
        "session_id": r.session_id,
        "state": None,
        "updated_at": None,
        "workspace_id": r.workspace_id,
    }
