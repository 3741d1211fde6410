"""The task state machine, written once as data.

Who moves a task out of each state:

- ``draft``: a person publishes it (or cancels it).
- ``blocked``: the engine, when the reason clears (a dependency completes, approval is granted).
- ``scheduled``: the ticker, when its timer fires (retry backoff), or an operator canceling the waiting run.
- ``ready``: a worker claiming its queued run, or a person picking it up.
- ``in_progress``: the run's holder completes/fails/releases it, or its lease expires; an operator
  canceling the run (not the task) drops it back to ``ready`` without a run.
- ``on_hold``: whoever put it on hold resumes it (or an operator cancels its run).
- ``completed``, ``failed``, ``skipped``, ``canceled``: final; nothing moves them.
"""

from __future__ import annotations

from typing import Literal, assert_never, get_args

from workloom.domain.errors import InvalidTransition

TaskStatus = Literal[
    "draft", "blocked", "scheduled", "ready", "in_progress", "on_hold", "completed", "failed", "skipped", "canceled"
]
TaskAction = Literal[
    "publish_blocked",
    "publish_ready",
    "block",
    "unblock",
    "schedule",
    "fire",
    "claim",
    "hold",
    "resume",
    "requeue",
    "drop_run",
    "retry_later",
    "complete",
    "fail",
    "skip",
    "cancel",
]
BlockedReason = Literal["dependencies", "approval", "condition", "confirmation"]

TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
FINAL_TASK_STATUSES: frozenset[str] = frozenset({"completed", "failed", "skipped", "canceled"})
BLOCKED_REASONS: tuple[str, ...] = get_args(BlockedReason)

_OPEN: tuple[TaskStatus, ...] = ("draft", "blocked", "scheduled", "ready", "in_progress", "on_hold")

TRANSITIONS: dict[tuple[TaskStatus, TaskAction], TaskStatus] = {
    ("draft", "publish_blocked"): "blocked",
    ("draft", "publish_ready"): "ready",
    ("blocked", "block"): "blocked",
    ("ready", "block"): "blocked",
    ("scheduled", "block"): "blocked",
    ("blocked", "unblock"): "ready",
    ("ready", "schedule"): "scheduled",
    ("scheduled", "fire"): "ready",
    ("ready", "claim"): "in_progress",
    ("in_progress", "hold"): "on_hold",
    ("on_hold", "resume"): "in_progress",
    ("in_progress", "requeue"): "ready",
    # The run was canceled on its own (not the task): the task waits, ready, for someone to enqueue anew.
    **{(status, "drop_run"): "ready" for status in ("in_progress", "on_hold", "scheduled")},
    ("in_progress", "retry_later"): "scheduled",
    ("in_progress", "complete"): "completed",
    ("in_progress", "fail"): "failed",
    ("ready", "complete"): "completed",
    **{(status, "skip"): "skipped" for status in ("draft", "blocked", "scheduled", "ready")},
    **{(status, "cancel"): "canceled" for status in _OPEN},
}


def apply(status: TaskStatus, action: TaskAction) -> TaskStatus:
    """The status after ``action``; raises ``InvalidTransition`` when the table does not allow it."""
    target = TRANSITIONS.get((status, action))
    if target is None:
        raise InvalidTransition(
            f"a task that is {status} cannot {action.replace('_', ' ')}", status=status, action=action
        )
    return target


def can(status: TaskStatus, action: TaskAction) -> bool:
    return (status, action) in TRANSITIONS


def is_final(status: TaskStatus) -> bool:
    match status:
        case "completed" | "failed" | "skipped" | "canceled":
            return True
        case "draft" | "blocked" | "scheduled" | "ready" | "in_progress" | "on_hold":
            return False
        case _:
            assert_never(status)
