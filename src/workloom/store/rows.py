"""Turning rows into domain objects (and back); the only place that knows column names map to fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from workloom.domain.actors import Actor
from workloom.domain.models import ApiKey, Event, Queue, Run, Task, Workspace
from workloom.domain.priority import NAME_BY_RANK
from workloom.domain.run_states import RunStatus
from workloom.domain.task_states import TaskStatus

Row = Mapping[Any, Any]  # a SQLAlchemy RowMapping, or a plain dict from ``store.fast``


def actor(kind: str | None, ref: str | None) -> Actor | None:
    return Actor(kind, ref or "") if kind else None


def workspace(row: Row) -> Workspace:
    return Workspace(id=row["id"], name=row["name"], created_at=row["created_at"])


def api_key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        workspace_id=row["workspace_id"],
        role=row["role"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def queue(row: Row) -> Queue:
    return Queue(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        description=row["description"],
        lease_seconds=row["lease_seconds"],
        max_attempts=row["max_attempts"],
        initial_interval_seconds=row["initial_interval_seconds"],
        backoff_coefficient=row["backoff_coefficient"],
        max_interval_seconds=row["max_interval_seconds"],
        start_mode=row["start_mode"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def task(row: Row, queue_name: str | None = None) -> Task:
    created_by = actor(row["created_by_kind"], row["created_by_ref"])
    origin = actor(row["origin_kind"], row["origin_ref"])
    assert created_by is not None and origin is not None
    return Task(
        id=row["id"],
        workspace_id=row["workspace_id"],
        number=row["number"],
        title=row["title"],
        description=row["description"],
        queue_id=row["queue_id"],
        queue=queue_name if queue_name is not None else row.get("queue_name"),
        data=row["data"],
        output=row["output"],
        error=row["error"],
        priority=NAME_BY_RANK[row["priority"]],
        status=cast(TaskStatus, row["status"]),
        blocked_reason=row["blocked_reason"],
        draft=row["draft"],
        approval_policy=row["approval_policy"],
        approval_state=row["approval_state"],
        parent_task_id=row["parent_task_id"],
        max_attempts=row["max_attempts"],
        attempts=row["attempts"],
        start_requested=row["start_requested"],
        due_at=row["due_at"],
        overdue_at=row["overdue_at"],
        owner=actor(row["owner_kind"], row["owner_ref"]),
        created_by=created_by,
        origin=origin,
        metadata=row["metadata"],
        event_sequence=row["event_sequence"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        closed_at=row["closed_at"],
        last_activity_at=row["last_activity_at"],
        scope=row["scope"],
    )


def run(row: Row) -> Run:
    return Run(
        id=row["id"],
        workspace_id=row["workspace_id"],
        task_id=row["task_id"],
        queue_id=row["queue_id"],
        attempt=row["attempt"],
        status=cast(RunStatus, row["status"]),
        priority_rank=row["priority"],
        available_at=row["available_at"],
        queued_at=row["queued_at"],
        claimed_at=row["claimed_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        heartbeat_at=row["heartbeat_at"],
        lease_until=row["lease_until"],
        claim_token_hash=row["claim_token_hash"],
        claimed_by=actor(row["claimed_by_kind"], row["claimed_by_ref"]),
        end_reason=row["end_reason"],
        error=row["error"],
        result=row["result"],
        progress=row["progress"],
        usage=row["usage"],
        metadata=row["metadata"],
        queue=row.get("queue_name"),
        session_id=row["session_id"],
        origin=actor(row["origin_kind"], row["origin_ref"]),
        idempotency_key=row["idempotency_key"],
    )


def event(row: Row) -> Event:
    who = actor(row["actor_kind"], row["actor_ref"])
    assert who is not None
    return Event(
        sequence=row["sequence"],
        workspace_id=row["workspace_id"],
        task_id=row["task_id"],
        run_id=row["run_id"],
        task_sequence=row["task_sequence"],
        type=row["type"],
        actor=who,
        origin=actor(row["origin_kind"], row["origin_ref"]),
        payload=row["payload"],
        created_at=row["created_at"],
    )


def actor_columns(prefix: str, who: Actor | None) -> dict[str, Any]:
    return {f"{prefix}_kind": who.kind if who else None, f"{prefix}_ref": who.ref if who else None}
