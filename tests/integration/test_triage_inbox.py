"""Per-person triage (read, dismiss, archive) and the inbox lanes, each person seeing their own."""

from __future__ import annotations

import pytest
from harness import Harness

from workloom.domain import triage as rules
from workloom.domain.errors import NotFound, ValidationFailed
from workloom.domain.triage import Inbox, InboxFilters
from workloom.engine import tasks, triage


@pytest.fixture
async def alice(wl, clock) -> Harness:
    return await Harness.open(wl, clock, role="member")


@pytest.fixture
async def bob(wl, clock) -> Harness:
    return await Harness.open(wl, clock, role="member")


async def inbox(h: Harness, **filters: object) -> Inbox:
    return await h.do(lambda u: triage.inbox(u, InboxFilters(**filters)))  # type: ignore[arg-type]


def lanes(box: Inbox) -> dict[str, tuple[int, int]]:
    return {c.lane: (c.count, c.unread_count) for c in box.lanes}


def items(box: Inbox) -> list[tuple[str, str, bool]]:
    return [(i.lane, i.task.title, i.unread) for i in box.items]


async def test_each_person_has_their_own_read_state(alice, bob):
    task = await alice.create("needs a look", queue="q", approval_policy="required")
    for person in (alice, bob):
        box = await inbox(person)
        assert items(box) == [("approvals", "needs a look", True)]
        assert box.unread_total == 1

    alice.clock.advance(1)
    state = await alice.do(lambda u: triage.mark(u, task.id, "read"))
    assert (state.read, state.dismissed, state.archived) == (True, False, False)
    assert state.actor == alice.principal.actor
    assert state.last_seen_activity_at == task.last_activity_at

    assert items(await inbox(alice)) == [("approvals", "needs a look", False)]
    assert items(await inbox(bob)) == [("approvals", "needs a look", True)]
    assert (await bob.do(lambda u: triage.get(u, task.id))).read is False
    # Marking is not an event: nobody else's item turns unread because alice read it.
    assert "triage" not in " ".join(await alice.event_types(task.id))


async def test_new_activity_makes_an_item_unread_again(alice):
    task = await alice.create("blocked", queue="q", approval_policy="required")
    await alice.do(lambda u: triage.mark(u, task.id, "read"))
    assert lanes(await inbox(alice))["approvals"] == (1, 0)

    alice.clock.advance(5)
    await alice.do(lambda u: tasks.patch(u, task.id, {"title": "blocked, renamed"}))
    box = await inbox(alice)
    assert lanes(box)["approvals"] == (1, 1)
    assert box.items[0].triage.read is False
    assert [i.task.title for i in (await inbox(alice, unread=True)).items] == ["blocked, renamed"]
    assert (await inbox(alice, unread=False)).items == []


async def test_lanes_sort_work_by_what_it_waits_for(wl, clock, alice, bob):
    agent = await Harness.open(wl, clock, role="agent")
    await alice.queue("q", max_attempts=1)
    await alice.queue("retrying", max_attempts=3, initial_interval_seconds=60)
    me = alice.principal.actor

    await alice.create("mine", owner=me)
    await alice.create("my draft", owner=me, draft=True)
    await alice.create("bob's", owner=bob.principal.actor)
    await alice.create("approve me", queue="q", approval_policy="required")
    dependency = await alice.create("dependency")
    await alice.create("waits", depends_on=[dependency.id], owner=me)
    await alice.create("fails", queue="q")
    await alice.fail(await alice.claim_one("q"), "exploded")
    await alice.create("retries", queue="retrying")
    await alice.fail(await alice.claim_one("retrying"), "flaky")
    done = await alice.create("done", owner=me, queue="done")
    await alice.complete(await alice.claim_one("done"))

    box = await inbox(alice)
    assert sorted(items(box)) == sorted(
        [
            ("my_work", "mine", True),
            ("my_work", "my draft", True),
            ("approvals", "approve me", True),
            ("blocked", "waits", True),
            ("failed_runs", "fails", True),
            ("failed_runs", "retries", True),
        ]
    )
    assert lanes(box) == {
        "my_work": (2, 2),
        "approvals": (1, 1),
        "failed_runs": (2, 2),
        "blocked": (1, 1),
        "archived": (0, 0),
    }
    assert (box.total, box.unread_total, box.archived_total) == (6, 6, 0)
    # Lanes come in order; within one, the most recent activity first.
    assert [i.lane for i in box.items] == ["my_work", "my_work", "approvals", "failed_runs", "failed_runs", "blocked"]
    by_title = {i.task.title: i for i in box.items}
    assert (by_title["waits"].reason, by_title["approve me"].reason) == ("dependencies", "approval")
    assert (by_title["fails"].reason, by_title["fails"].error) == ("task_failed", "exploded")
    assert (by_title["retries"].reason, by_title["retries"].error) == ("run_failed", "flaky")
    assert by_title["retries"].run is not None
    assert (by_title["retries"].run.status, by_title["retries"].run.attempt) == ("queued", 2)
    assert by_title["mine"].run is None
    for item in box.items:
        assert rules.lane_of(item.task, me, archived=False) == item.lane

    # Another person shares the workspace-wide lanes, but not alice's work.
    assert lanes(await inbox(bob))["my_work"] == (1, 1)
    assert lanes(await inbox(agent))["my_work"] == (0, 0)
    # One lane at a time, filters on the owner, the title, the queue.
    assert [i.task.title for i in (await inbox(alice, lane="blocked")).items] == ["waits"]
    assert {i.task.title for i in (await inbox(alice, owner_ref=me.ref)).items} == {"mine", "my draft", "waits"}
    assert [i.task.title for i in (await inbox(alice, search="approve")).items] == ["approve me"]
    assert [i.task.title for i in (await inbox(alice, queue="retrying")).items] == ["retries"]
    assert (await inbox(alice, queue="nope")).items == []
    assert done.id not in {i.task.id for i in box.items}


async def test_dismiss_hides_until_new_activity_and_archive_moves_for_good(alice, bob):
    dismissed = await alice.create("dismiss me", approval_policy="required", queue="q")
    archived = await alice.create("archive me", approval_policy="required", queue="q")

    state = await alice.do(lambda u: triage.mark(u, dismissed.id, "dismiss"))
    assert (state.read, state.dismissed) == (True, True)
    state = await alice.do(lambda u: triage.mark(u, archived.id, "archive"))
    assert (state.read, state.archived) == (True, True)

    box = await inbox(alice)
    assert items(box) == [("archived", "archive me", False)]
    assert lanes(box)["approvals"] == (0, 0)
    assert (box.total, box.archived_total) == (0, 1)
    assert len((await inbox(bob)).items) == 2  # bob dismissed and archived nothing

    alice.clock.advance(1)
    await bob.do(lambda u: tasks.approve(u, dismissed.id))
    await bob.do(lambda u: tasks.approve(u, archived.id))
    # Approved, they left the approvals lane; give the dismissed one new trouble to come back with.
    blocker = await alice.create("blocker")
    alice.clock.advance(1)
    await alice.do(lambda u: tasks.add_dependencies(u, dismissed.id, [blocker.id]))
    box = await inbox(alice)
    assert ("blocked", "dismiss me", True) in items(box)
    assert (await alice.do(lambda u: triage.get(u, dismissed.id))).dismissed is False
    assert ("archived", "archive me", True) in items(box)  # archived stays archived, new activity or not

    state = await alice.do(lambda u: triage.mark(u, dismissed.id, "read"))
    assert (state.read, state.dismissed, state.dismissed_at) == (True, False, None)
    assert ("blocked", "dismiss me", False) in items(await inbox(alice))


async def test_triage_refuses_unknown_tasks_lanes_and_limits(alice):
    with pytest.raises(NotFound):
        await alice.do(lambda u: triage.mark(u, "task_nope", "read"))
    with pytest.raises(ValidationFailed):
        await inbox(alice, lane="nowhere")
    with pytest.raises(ValidationFailed):
        await inbox(alice, limit=0)


async def test_triage_is_per_workspace(alice):
    other = await alice.other_workspace("globex")
    task = await alice.create("ours", approval_policy="required", queue="q")
    with pytest.raises(NotFound):
        await other.do(lambda u: triage.mark(u, task.id, "read"))
    assert (await inbox(other)).items == []


async def test_the_limit_applies_per_lane(alice):
    me = alice.principal.actor
    for i in range(3):
        alice.clock.advance(1)
        await alice.create(f"mine {i}", owner=me)
        await alice.create(f"approve {i}", queue="q", approval_policy="required")
    box = await inbox(alice, limit=2)
    assert items(box) == [
        ("my_work", "mine 2", True),
        ("my_work", "mine 1", True),
        ("approvals", "approve 2", True),
        ("approvals", "approve 1", True),
    ]
    assert lanes(box)["my_work"] == (3, 3)
