"""The task state machine: the table is the whole truth, and final states are absorbing."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from workloom.domain import task_states
from workloom.domain.errors import InvalidTransition
from workloom.domain.task_states import FINAL_TASK_STATUSES, TASK_STATUSES, TRANSITIONS, TaskAction

ACTIONS: tuple[str, ...] = get_args(TaskAction)
OPEN = [s for s in TASK_STATUSES if s not in FINAL_TASK_STATUSES]
MISSING = [pair for pair in itertools.product(TASK_STATUSES, ACTIONS) if pair not in TRANSITIONS]

EXPECTED = {
    ("draft", "publish_blocked"): "blocked",
    ("draft", "publish_ready"): "ready",
    ("blocked", "unblock"): "ready",
    ("ready", "block"): "blocked",
    ("ready", "schedule"): "scheduled",
    ("scheduled", "fire"): "ready",
    ("ready", "claim"): "in_progress",
    ("in_progress", "hold"): "on_hold",
    ("on_hold", "resume"): "in_progress",
    ("in_progress", "requeue"): "ready",
    ("in_progress", "drop_run"): "ready",
    ("on_hold", "drop_run"): "ready",
    ("scheduled", "drop_run"): "ready",
    ("in_progress", "retry_later"): "scheduled",
    ("in_progress", "complete"): "completed",
    ("in_progress", "fail"): "failed",
    ("ready", "skip"): "skipped",
    ("on_hold", "cancel"): "canceled",
}


@pytest.mark.parametrize(("status", "action"), sorted(EXPECTED))
def test_the_documented_moves(status, action):
    assert task_states.apply(status, action) == EXPECTED[(status, action)]


@pytest.mark.parametrize(("status", "action"), sorted(TRANSITIONS))
def test_apply_follows_the_table(status, action):
    assert task_states.apply(status, action) == TRANSITIONS[(status, action)]
    assert task_states.can(status, action)


@pytest.mark.parametrize(("status", "action"), MISSING)
def test_apply_refuses_what_the_table_lacks(status, action):
    assert not task_states.can(status, action)
    with pytest.raises(InvalidTransition) as info:
        task_states.apply(status, action)
    assert info.value.extra == {"status": status, "action": action}
    assert status in info.value.detail
    assert action.replace("_", " ") in info.value.detail


def test_every_target_is_a_status():
    assert set(TRANSITIONS.values()) <= set(TASK_STATUSES)
    assert {status for status, _ in TRANSITIONS} <= set(TASK_STATUSES)


@pytest.mark.parametrize("status", sorted(FINAL_TASK_STATUSES))
def test_final_states_are_absorbing(status):
    assert task_states.is_final(status)
    assert not [action for action in ACTIONS if task_states.can(status, action)]


@pytest.mark.parametrize("status", OPEN)
def test_every_open_task_can_be_canceled(status):
    assert not task_states.is_final(status)
    assert task_states.apply(status, "cancel") == "canceled"


def test_every_status_is_reachable_from_draft():
    reached = {"draft"}
    frontier = ["draft"]
    while frontier:
        status = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source == status and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(TASK_STATUSES)


def test_work_in_progress_cannot_be_skipped_or_published():
    for action in ("skip", "publish_ready", "publish_blocked"):
        assert not task_states.can("in_progress", action)
