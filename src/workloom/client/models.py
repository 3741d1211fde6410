"""The native API's resources as typed models.

Every model allows fields it does not know (``extra="allow"``), so a client keeps working against a newer
server that adds fields; the extra values stay readable as attributes and in ``model_dump()``. Status and
kind fields are plain strings for the same reason: a new status must not break an old client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Model(BaseModel):
    """Base of every resource: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow")


class Actor(Model):
    """Who did something: ``kind`` (human, agent_session, automation, extension, network_peer, pool) and ``ref``."""

    kind: str
    ref: str


class Queue(Model):
    """A named channel of work with its lease and retry defaults."""

    id: str
    name: str
    description: str | None = None
    lease_seconds: int | None = None
    max_attempts: int | None = None
    initial_interval_seconds: float | None = None
    backoff_coefficient: float | None = None
    max_interval_seconds: float | None = None
    start_mode: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Task(Model):
    """The unit of work. ``status`` is one of draft, blocked, scheduled, ready, in_progress, on_hold,
    completed, failed, skipped, canceled."""

    id: str
    identifier: str | None = None
    workspace_id: str | None = None
    title: str
    description: str | None = None
    queue: str | None = None
    status: str
    blocked_reason: str | None = None
    priority: str | None = None
    draft: bool = False
    approval_policy: str | None = None
    approval_state: str | None = None
    parent_task_id: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    max_attempts: int | None = None
    attempts: int = 0
    data: Any = None
    output: Any = None
    error: str | None = None
    due_at: datetime | None = None
    overdue_at: datetime | None = None
    owner: Actor | None = None
    created_by: Actor | None = None
    origin: Actor | None = None
    metadata: Any = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    last_activity_at: datetime | None = None


class Run(Model):
    """One attempt at a task under a lease. ``status`` is one of queued, claimed, starting, running,
    completed, failed, canceled."""

    id: str
    task_id: str
    queue: str | None = None
    attempt: int
    status: str
    available_at: datetime | None = None
    queued_at: datetime | None = None
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lease_until: datetime | None = None
    claimed_by: Actor | None = None
    end_reason: str | None = None
    error: str | None = None
    result: Any = None
    progress: Any = None
    usage: Any = None
    metadata: Any = None


class Claim(Model):
    """A claimed run: the task, the run, and the secret token every later run call must present."""

    task: Task
    run: Run
    claim_token: str
    lease_until: datetime


class RunOutcome(Model):
    """One item of a batch completion, start or heartbeat: the run's ``status`` (``completed``, ``running``)
    when it was done, else ``error``, the problem that refused it (``exception`` gives it as the SDK's typed
    error)."""

    run_id: str
    status: str | None = None
    lease_until: datetime | None = None  # a heartbeat's: the lease it renewed
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exception(self) -> Exception | None:
        from workloom.client.errors import from_problem

        return from_problem(self.error) if self.error is not None else None


class Event(Model):
    """One entry of the append-only event log: ``sequence`` is global, ``task_sequence`` counts per task."""

    sequence: int
    task_sequence: int | None = None
    type: str
    task_id: str | None = None
    run_id: str | None = None
    actor: Actor | None = None
    origin: Actor | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class TaskTree(Model):
    """A task and its children, recursively."""

    task: Task
    children: list[TaskTree] = Field(default_factory=list)


class Page(Model, Generic[T]):
    """One page of a listing. ``next_cursor`` fetches the next page (``None`` on the last); ``total`` is
    present when the listing was asked to count."""

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None
