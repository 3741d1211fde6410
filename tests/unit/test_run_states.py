"""The run state machine: queued → held (claimed/starting/running) → final, and nothing leaves a final state."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from workloom.domain import run_states
from workloom.domain.errors import InvalidTransition
from workloom.domain.run_states import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    HELD_RUN_STATUSES,
    RUN_STATUSES,
    TRANSITIONS,
    RunAction,
)

ACTIONS: tuple[str, ...] = get_args(RunAction)
MISSING = [pair for pair in itertools.product(RUN_STATUSES, ACTIONS) if pair not in TRANSITIONS]


@pytest.mark.parametrize(
    ("status", "action", "target"),
    [
        ("queued", "claim", "claimed"),
        ("queued", "cancel", "canceled"),
        ("claimed", "begin", "starting"),
        ("claimed", "start", "running"),
        ("starting", "start", "running"),
        ("running", "complete", "completed"),
        ("running", "fail", "failed"),
        ("running", "expire", "failed"),
        ("claimed", "expire", "failed"),
        ("starting", "release", "canceled"),
        ("running", "cancel", "canceled"),
    ],
)
def test_the_documented_moves(status, action, target):
    assert run_states.apply(status, action) == target


@pytest.mark.parametrize(("status", "action"), sorted(TRANSITIONS))
def test_apply_follows_the_table(status, action):
    assert run_states.apply(status, action) == TRANSITIONS[(status, action)]


@pytest.mark.parametrize(("status", "action"), MISSING)
def test_apply_refuses_what_the_table_lacks(status, action):
    with pytest.raises(InvalidTransition) as info:
        run_states.apply(status, action)
    assert info.value.extra == {"status": status, "action": action}


@pytest.mark.parametrize("status", FINAL_RUN_STATUSES)
def test_final_states_are_absorbing(status):
    assert not [action for action in ACTIONS if (status, action) in TRANSITIONS]
    assert not run_states.is_held(status)


@pytest.mark.parametrize("status", HELD_RUN_STATUSES)
def test_a_held_run_can_always_be_ended(status):
    """Whatever the holder does, the ticker (expire) and the task (cancel) can end a held run."""
    assert run_states.is_held(status)
    for action in ("complete", "fail", "expire", "release", "cancel"):
        assert run_states.apply(status, action) in FINAL_RUN_STATUSES


def test_a_queued_run_is_not_held_and_cannot_be_finished_without_a_claim():
    assert not run_states.is_held("queued")
    for action in ("complete", "fail", "expire", "release", "start"):
        with pytest.raises(InvalidTransition):
            run_states.apply("queued", action)


def test_status_groups_partition_the_statuses():
    assert set(ACTIVE_RUN_STATUSES) == {"queued", *HELD_RUN_STATUSES}
    assert set(ACTIVE_RUN_STATUSES) | set(FINAL_RUN_STATUSES) == set(RUN_STATUSES)
    assert not set(ACTIVE_RUN_STATUSES) & set(FINAL_RUN_STATUSES)
    assert set(TRANSITIONS.values()) <= set(RUN_STATUSES)
