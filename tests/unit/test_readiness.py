"""Where a published task settles: dependencies block first, then approval; runs only for ready tasks."""

from __future__ import annotations

import pytest

from workloom.domain.readiness import Facts, Settled, initial_approval_state, settle


def facts(**overrides) -> Facts:
    values = {
        "dependencies_open": 0,
        "approval_policy": "none",
        "approval_state": "not_required",
        "has_queue": True,
        "queue_starts_automatically": True,
        "start_requested": False,
    }
    return Facts(**{**values, **overrides})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (facts(), Settled(None, enqueue_run=True)),
        (facts(dependencies_open=2), Settled("dependencies", enqueue_run=False)),
        (facts(approval_policy="required", approval_state="pending"), Settled("approval", enqueue_run=False)),
        (facts(approval_policy="required", approval_state="approved"), Settled(None, enqueue_run=True)),
        (
            facts(dependencies_open=1, approval_policy="required", approval_state="pending"),
            Settled("dependencies", enqueue_run=False),
        ),
        (facts(has_queue=False, queue_starts_automatically=False), Settled(None, enqueue_run=False)),
        (facts(queue_starts_automatically=False), Settled(None, enqueue_run=False)),
        (facts(queue_starts_automatically=False, start_requested=True), Settled(None, enqueue_run=True)),
        (facts(has_queue=False, queue_starts_automatically=False, start_requested=True), Settled(None, False)),
    ],
    ids=[
        "ready-auto",
        "open-dependencies",
        "approval-pending",
        "approval-granted",
        "dependencies-before-approval",
        "no-queue",
        "manual-queue",
        "manual-queue-started",
        "start-without-queue",
    ],
)
def test_settle(given, expected):
    outcome = settle(given)
    assert outcome == expected
    assert outcome.ready is (expected.blocked_reason is None)


def test_a_rejected_task_stays_blocked_on_approval():
    assert settle(facts(approval_policy="required", approval_state="rejected")).blocked_reason == "approval"


@pytest.mark.parametrize(("policy", "state"), [("required", "pending"), ("none", "not_required")])
def test_initial_approval_state(policy, state):
    assert initial_approval_state(policy) == state
