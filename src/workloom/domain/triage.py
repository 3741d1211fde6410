"""Per-person triage and the inbox lanes, as rules on a task's facts.

Each person (each actor ``{kind, ref}``) has their own triage state per task: read, dismissed, archived.

- **unread**: the task has had activity (any event on its timeline) since the caller last marked it
  read, or the caller never did: ``last_seen_activity_at is None or task.last_activity_at >
  last_seen_activity_at``. ``last_seen_activity_at`` is the task's ``last_activity_at`` at the moment
  of the mark, so the rule does not depend on clocks agreeing.
- **dismissed**: "not now". Dismissing also marks read; the item leaves every lane until the task has
  new activity, which ends the dismissal (the item returns, unread).
- **archived**: "done with it". Archiving also marks read; the item moves to the ``archived`` lane and
  stays there whatever happens to the task.

Marking is not an event on the task's timeline: it is one person's view, not a change of the task,
and recording it would make the task unread for everyone else.

Lanes (each item is in exactly one; the first rule that matches wins):

1. ``archived`` — the caller archived it.
2. ``failed_runs`` — the task failed, or its last run failed and it waits to retry (``scheduled``).
3. ``approvals`` — open, published, approval pending.
4. ``blocked`` — blocked on dependencies (or a condition, a confirmation).
5. ``my_work`` — open (a draft too) and owned by the caller. Workloom has no assignee list apart from
   the owner: the owner is who the task is assigned to.

Otherwise the task is in no lane (completed, canceled, skipped; or open and not the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from workloom.domain.actors import Actor
from workloom.domain.models import Run, Task

Lane = Literal["my_work", "approvals", "failed_runs", "blocked", "archived"]
LANES: tuple[Lane, ...] = get_args(Lane)
TriageAction = Literal["read", "dismiss", "archive"]
TRIAGE_ACTIONS: tuple[str, ...] = get_args(TriageAction)

# The facts each lane looks at, shared by ``lane_of`` and the store's SQL.
FAILED_LANE_STATUSES: tuple[str, ...] = ("failed", "scheduled")
BLOCKED_LANE_STATUSES: tuple[str, ...] = ("blocked",)
MY_WORK_STATUSES: tuple[str, ...] = ("draft", "blocked", "scheduled", "ready", "in_progress", "on_hold")
APPROVAL_PENDING = "pending"


@dataclass(slots=True)
class TriageMarks:
    """What is stored for one person and one task."""

    read_at: datetime | None = None
    dismissed_at: datetime | None = None
    archived_at: datetime | None = None
    last_seen_activity_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class TriageState:
    """One person's triage of one task, with the flags the rules above derive from it."""

    task_id: str
    actor: Actor
    read: bool
    dismissed: bool
    archived: bool
    read_at: datetime | None
    dismissed_at: datetime | None
    archived_at: datetime | None
    last_seen_activity_at: datetime | None
    updated_at: datetime | None

    @property
    def unread(self) -> bool:
        return not self.read


def is_unread(marks: TriageMarks, last_activity_at: datetime) -> bool:
    return marks.last_seen_activity_at is None or last_activity_at > marks.last_seen_activity_at


def is_dismissed(marks: TriageMarks, last_activity_at: datetime) -> bool:
    """A dismissal holds until the task has activity the caller has not seen."""
    return marks.dismissed_at is not None and not is_unread(marks, last_activity_at)


def state(task_id: str, actor: Actor, marks: TriageMarks, last_activity_at: datetime) -> TriageState:
    return TriageState(
        task_id=task_id,
        actor=actor,
        read=not is_unread(marks, last_activity_at),
        dismissed=is_dismissed(marks, last_activity_at),
        archived=marks.archived_at is not None,
        read_at=marks.read_at,
        dismissed_at=marks.dismissed_at,
        archived_at=marks.archived_at,
        last_seen_activity_at=marks.last_seen_activity_at,
        updated_at=marks.updated_at,
    )


def marked(marks: TriageMarks, action: TriageAction, now: datetime, last_activity_at: datetime) -> TriageMarks:
    """The marks after ``action``. Every action marks read; a read after new activity ends a dismissal
    that the activity had already lifted."""
    dismissed_at = marks.dismissed_at
    if dismissed_at is not None and is_unread(marks, last_activity_at):
        dismissed_at = None
    return TriageMarks(
        read_at=now,
        dismissed_at=now if action == "dismiss" else dismissed_at,
        archived_at=(marks.archived_at or now) if action == "archive" else marks.archived_at,
        last_seen_activity_at=last_activity_at,
        updated_at=now,
    )


def lane_of(task: Task, caller: Actor, archived: bool) -> Lane | None:
    """The lane a task is in for ``caller`` (see the module docstring); None when in none."""
    if archived:
        return "archived"
    if task.status in FAILED_LANE_STATUSES:
        return "failed_runs"
    if task.status in ("completed", "canceled", "skipped"):
        return None
    if task.status != "draft" and task.approval_state == APPROVAL_PENDING:
        return "approvals"
    if task.status in BLOCKED_LANE_STATUSES:
        return "blocked"
    if task.owner == caller and task.status in MY_WORK_STATUSES:
        return "my_work"
    return None


def reason_of(task: Task, lane: Lane) -> str | None:
    """Why the item needs attention, as a short code: the blocked reason, ``approval``, ``task_failed``,
    ``run_failed`` (a retry is waiting); None for ``my_work`` and ``archived``."""
    if lane == "approvals":
        return "approval"
    if lane == "blocked":
        return task.blocked_reason
    if lane == "failed_runs":
        return "task_failed" if task.status == "failed" else "run_failed"
    return None


@dataclass(frozen=True, slots=True)
class InboxFilters:
    lane: Lane | None = None
    unread: bool | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    search: str | None = None
    scope: str | None = None
    queue: str | None = None
    limit: int = 50


@dataclass(slots=True)
class InboxItem:
    task: Task
    lane: Lane
    triage: TriageState
    unread: bool
    reason: str | None
    error: str | None
    run: Run | None  # the task's latest run


@dataclass(slots=True)
class LaneCount:
    lane: Lane
    count: int
    unread_count: int


@dataclass(slots=True)
class Inbox:
    items: list[InboxItem]
    lanes: list[LaneCount]
    total: int  # items in every lane but archived
    unread_total: int  # unread items in every lane but archived
    archived_total: int
    filters: InboxFilters = field(default_factory=InboxFilters)
