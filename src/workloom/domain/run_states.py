"""The run state machine: one attempt to execute a task under a lease, written as data.

Who moves a run out of each state:

- ``queued``: a worker claims it; canceling the task cancels it.
- ``claimed``, ``starting``, ``running``: the lease holder (start, complete, fail, release), the ticker
  when the lease expires, or canceling the task.
- ``completed``, ``failed``, ``canceled``: final.
"""

from __future__ import annotations

from typing import Literal, assert_never, get_args

from workloom.domain.errors import InvalidTransition

RunStatus = Literal["queued", "claimed", "starting", "running", "completed", "failed", "canceled"]
RunAction = Literal["claim", "begin", "start", "complete", "fail", "expire", "release", "cancel"]

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
ACTIVE_RUN_STATUSES: tuple[RunStatus, ...] = ("queued", "claimed", "starting", "running")
HELD_RUN_STATUSES: tuple[RunStatus, ...] = ("claimed", "starting", "running")
FINAL_RUN_STATUSES: tuple[RunStatus, ...] = ("completed", "failed", "canceled")

_HELD_EXITS: dict[RunAction, RunStatus] = {
    "complete": "completed",
    "fail": "failed",
    "expire": "failed",
    "release": "canceled",
    "cancel": "canceled",
}

TRANSITIONS: dict[tuple[RunStatus, RunAction], RunStatus] = {
    ("queued", "claim"): "claimed",
    ("queued", "cancel"): "canceled",
    ("claimed", "begin"): "starting",
    ("claimed", "start"): "running",
    ("starting", "start"): "running",
    **{(held, action): target for held in HELD_RUN_STATUSES for action, target in _HELD_EXITS.items()},
}


def apply(status: RunStatus, action: RunAction) -> RunStatus:
    """The status after ``action``; raises ``InvalidTransition`` when the table does not allow it."""
    target = TRANSITIONS.get((status, action))
    if target is None:
        raise InvalidTransition(f"a run that is {status} cannot {action}", status=status, action=action)
    return target


def is_held(status: RunStatus) -> bool:
    """Whether a lease holder currently owns the run."""
    match status:
        case "claimed" | "starting" | "running":
            return True
        case "queued" | "completed" | "failed" | "canceled":
            return False
        case _:
            assert_never(status)
