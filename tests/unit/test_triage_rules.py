"""Per-person triage rules: unread, dismiss until new activity, archive for good, and the lanes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from workloom.domain.actors import Actor
from workloom.domain.models import Task
from workloom.domain.triage import TriageMarks, is_dismissed, is_unread, lane_of, marked, reason_of, state

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ME = Actor("human", "me")
YOU = Actor("human", "you")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(**fields: object) -> Task:
    base = Task(
        id="task_1",
        workspace_id="ws_1",
        number=1,
        title="t",
        description=None,
        queue_id=None,
        queue=None,
        data=None,
        output=None,
        error=None,
        priority="medium",
        status="ready",
        blocked_reason=None,
        draft=False,
        approval_policy="none",
        approval_state="not_required",
        parent_task_id=None,
        max_attempts=None,
        attempts=0,
        start_requested=False,
        due_at=None,
        overdue_at=None,
        owner=None,
        created_by=ME,
        origin=Actor("http", "key"),
        metadata=None,
        event_sequence=1,
        created_at=T0,
        updated_at=T0,
        closed_at=None,
        last_activity_at=T0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_never_marked_is_unread_and_nothing_else():
    s = state("task_1", ME, TriageMarks(), T0)
    assert (s.read, s.unread, s.dismissed, s.archived) == (False, True, False, False)


def test_read_holds_until_the_task_has_newer_activity():
    marks = marked(TriageMarks(), "read", now=at(10), last_activity_at=at(5))
    assert (marks.read_at, marks.last_seen_activity_at, marks.updated_at) == (at(10), at(5), at(10))
    assert not is_unread(marks, at(5))
    assert is_unread(marks, at(6))


def test_dismissing_reads_and_hides_until_new_activity_which_a_later_read_clears():
    marks = marked(TriageMarks(), "dismiss", now=at(10), last_activity_at=at(5))
    assert is_dismissed(marks, at(5)) and not is_unread(marks, at(5))
    assert not is_dismissed(marks, at(7))
    again = marked(marks, "read", now=at(20), last_activity_at=at(7))
    assert again.dismissed_at is None
    assert not is_dismissed(again, at(7))
    # A read while the dismissal still holds keeps it.
    assert marked(marks, "read", now=at(11), last_activity_at=at(5)).dismissed_at == at(10)


def test_archiving_reads_and_keeps_the_first_archive_time():
    marks = marked(TriageMarks(), "archive", now=at(10), last_activity_at=at(5))
    later = marked(marks, "archive", now=at(30), last_activity_at=at(20))
    assert (marks.archived_at, later.archived_at) == (at(10), at(10))
    assert state("task_1", ME, later, at(25)).archived


@pytest.mark.parametrize(
    ("fields", "lane", "reason"),
    [
        ({"status": "failed", "error": "x"}, "failed_runs", "task_failed"),
        ({"status": "scheduled"}, "failed_runs", "run_failed"),
        ({"status": "blocked", "blocked_reason": "approval", "approval_state": "pending"}, "approvals", "approval"),
        ({"status": "blocked", "blocked_reason": "dependencies"}, "blocked", "dependencies"),
        ({"status": "ready", "owner": ME}, "my_work", None),
        ({"status": "draft", "owner": ME, "approval_state": "pending"}, "my_work", None),
        ({"status": "in_progress", "owner": ME}, "my_work", None),
        ({"status": "ready", "owner": YOU}, None, None),
        ({"status": "completed", "owner": ME}, None, None),
        ({"status": "canceled", "approval_state": "pending"}, None, None),
    ],
)
def test_each_task_is_in_at_most_one_lane(fields, lane, reason):
    t = task(**fields)
    assert lane_of(t, ME, archived=False) == lane
    assert lane_of(t, ME, archived=True) == "archived"
    if lane is not None:
        assert reason_of(t, lane) == reason
