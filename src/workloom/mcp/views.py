"""What the tools answer: small, typed views of the SDK's models, shaped for a model to read.

Each tool returns one of these, so its MCP ``outputSchema`` is published and its answer arrives both as
structured content and as JSON text. Ids, statuses and times are kept; the fields an agent has no use for
(workspace ids, token hashes, internal timestamps) are left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from workloom.client import Actor, Event, Queue, Run, Task


def actor_label(actor: Actor | None) -> str | None:
    return f"{actor.kind}:{actor.ref}" if actor is not None else None


class QueueInfo(BaseModel):
    name: str
    description: str | None = None
    lease_seconds: int | None = Field(None, description="How long a claim holds a task unless it is renewed.")
    max_attempts: int | None = None
    ready_tasks: int | None = Field(None, description="Tasks waiting to be claimed now (null if unknown).")

    @classmethod
    def of(cls, queue: Queue, ready: int | None) -> QueueInfo:
        return cls(
            name=queue.name,
            description=queue.description,
            lease_seconds=queue.lease_seconds,
            max_attempts=queue.max_attempts,
            ready_tasks=ready,
        )


class QueueList(BaseModel):
    queues: list[QueueInfo]


class TaskInput(BaseModel):
    """A task as a worker needs it: what to do (title, description) and its input (data)."""

    task_id: str
    identifier: str | None = Field(None, description="The short human name of the task, e.g. WL-42.")
    title: str
    description: str | None = None
    data: Any = Field(None, description="The task's input, as given by whoever created it.")
    queue: str | None = None
    priority: str | None = None
    status: str
    attempts: int = Field(0, description="Attempts spent on the task so far.")
    max_attempts: int | None = None
    parent_task_id: str | None = None
    due_at: datetime | None = None

    @classmethod
    def of(cls, task: Task) -> TaskInput:
        return cls(
            task_id=task.id,
            identifier=task.identifier,
            title=task.title,
            description=task.description,
            data=task.data,
            queue=task.queue,
            priority=task.priority,
            status=task.status,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            parent_task_id=task.parent_task_id,
            due_at=task.due_at,
        )


class ClaimOutcome(BaseModel):
    claimed: bool
    message: str
    run_id: str | None = Field(None, description="Name this run in heartbeat, report_progress, complete_task, ...")
    attempt: int | None = Field(None, description="1 for the first try at the task, 2 for the first retry, ...")
    lease_until: datetime | None = None
    heartbeat_every_seconds: float | None = Field(
        None, description="The MCP server renews the lease this often by itself while you hold the run."
    )
    task: TaskInput | None = None


class TimelineEntry(BaseModel):
    sequence: int | None = Field(None, description="The event's number within the task.")
    type: str
    at: datetime | None = None
    actor: str | None = Field(None, description="kind:ref of who caused it, e.g. human:alice.")
    run_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, event: Event) -> TimelineEntry:
        return cls(
            sequence=event.task_sequence,
            type=event.type,
            at=event.created_at,
            actor=actor_label(event.actor),
            run_id=event.run_id,
            payload=event.payload,
        )


class RunInfo(BaseModel):
    run_id: str
    attempt: int
    status: str
    claimed_by: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    lease_until: datetime | None = None
    error: str | None = None
    progress: Any = None
    held_by_this_session: bool = False

    @classmethod
    def of(cls, run: Run, held: bool = False) -> RunInfo:
        return cls(
            run_id=run.id,
            attempt=run.attempt,
            status=run.status,
            claimed_by=actor_label(run.claimed_by),
            started_at=run.started_at or run.claimed_at,
            ended_at=run.ended_at,
            lease_until=run.lease_until,
            error=run.error,
            progress=run.progress,
            held_by_this_session=held,
        )


class TaskDetails(BaseModel):
    task: TaskInput
    output: Any = Field(None, description="The result of the attempt that completed the task, if any.")
    error: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    runs: list[RunInfo] = Field(default_factory=list, description="Every attempt at the task, oldest first.")
    timeline: list[TimelineEntry] = Field(default_factory=list, description="The task's events, oldest first.")
    earlier_events_omitted: int = Field(0, description="Events before the first one listed, left out for length.")


class RunOutcome(BaseModel):
    run_id: str
    task_id: str
    status: str = Field(description="The run's status now: running, completed, failed or canceled.")
    lease_until: datetime | None = None
    message: str

    @classmethod
    def of(cls, run: Run, message: str) -> RunOutcome:
        return cls(run_id=run.id, task_id=run.task_id, status=run.status, lease_until=run.lease_until, message=message)


class HumanAnswer(BaseModel):
    status: Literal["answered", "waiting", "declined"] = Field(
        description="answered: a person answered (see answer); waiting: no answer yet, call check_human_answer "
        "later; declined: the question was failed, canceled or deleted without an answer."
    )
    task_id: str = Field(description="The question's task; pass it to check_human_answer.")
    identifier: str | None = None
    question: str | None = None
    answer: Any = Field(None, description="What the person answered (the output of the question's task).")
    answered_by: str | None = None
    task_status: str
    message: str
