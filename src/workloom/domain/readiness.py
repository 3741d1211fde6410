"""Where a published task settles: blocked (and why), or ready, and whether it gets a queued run."""

from __future__ import annotations

from dataclasses import dataclass

from workloom.domain.task_states import BlockedReason

APPROVAL_STATES: tuple[str, ...] = ("not_required", "pending", "approved", "rejected")


@dataclass(frozen=True, slots=True)
class Facts:
    dependencies_open: int
    approval_policy: str
    approval_state: str
    has_queue: bool
    queue_starts_automatically: bool
    start_requested: bool


@dataclass(frozen=True, slots=True)
class Settled:
    blocked_reason: BlockedReason | None
    enqueue_run: bool

    @property
    def ready(self) -> bool:
        return self.blocked_reason is None


def settle(facts: Facts) -> Settled:
    """Dependencies block first, then approval; a ready task in an automatic queue gets a run at once."""
    if facts.dependencies_open > 0:
        return Settled("dependencies", enqueue_run=False)
    if facts.approval_policy == "required" and facts.approval_state != "approved":
        return Settled("approval", enqueue_run=False)
    enqueue = facts.has_queue and (facts.queue_starts_automatically or facts.start_requested)
    return Settled(None, enqueue_run=enqueue)


def initial_approval_state(approval_policy: str) -> str:
    return "pending" if approval_policy == "required" else "not_required"
