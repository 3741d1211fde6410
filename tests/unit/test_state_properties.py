"""Property tests on the transition tables: any sequence of attempted moves stays inside the machine."""

from __future__ import annotations

from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from workloom.domain import run_states, task_states
from workloom.domain.errors import InvalidTransition
from workloom.domain.run_states import FINAL_RUN_STATUSES, RUN_STATUSES, RunAction
from workloom.domain.task_states import FINAL_TASK_STATUSES, TASK_STATUSES, TaskAction

TASK_ACTIONS = get_args(TaskAction)
RUN_ACTIONS = get_args(RunAction)


def walk(apply, start, actions, statuses, finals):
    """Try every action in turn; refused ones leave the status alone. Checks the invariants as it goes."""
    status = start
    final_at = None
    for index, action in enumerate(actions):
        try:
            after = apply(status, action)
        except InvalidTransition:
            after = status
        assert after in statuses
        if final_at is not None:
            assert after == status, f"left final state {status} by {action} (final since step {final_at})"
        if after in finals and final_at is None:
            final_at = index
        status = after
    return status


@given(
    start=st.sampled_from(TASK_STATUSES),
    actions=st.lists(st.sampled_from(TASK_ACTIONS), max_size=40),
)
def test_task_walks_stay_in_the_machine(start, actions):
    walk(task_states.apply, start, actions, TASK_STATUSES, FINAL_TASK_STATUSES)


@given(
    start=st.sampled_from(RUN_STATUSES),
    actions=st.lists(st.sampled_from(RUN_ACTIONS), max_size=40),
)
def test_run_walks_stay_in_the_machine(start, actions):
    walk(run_states.apply, start, actions, RUN_STATUSES, FINAL_RUN_STATUSES)


@given(actions=st.lists(st.sampled_from(TASK_ACTIONS), max_size=40))
def test_apply_and_can_agree(actions):
    status = "draft"
    for action in actions:
        if task_states.can(status, action):
            status = task_states.apply(status, action)
        else:
            try:
                task_states.apply(status, action)
            except InvalidTransition:
                continue
            raise AssertionError(f"apply allowed {action} from {status} but can() said no")


@given(actions=st.lists(st.sampled_from(RUN_ACTIONS), min_size=1, max_size=40))
def test_a_run_is_held_only_between_claim_and_its_end(actions):
    status = "queued"
    for action in actions:
        try:
            after = run_states.apply(status, action)
        except InvalidTransition:
            continue
        if run_states.is_held(after):
            assert (status == "queued" and action == "claim") or run_states.is_held(status)
        status = after
