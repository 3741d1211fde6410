"""Listing tasks (filters, sort, cursor pages, count, search) and reading a task's timeline."""

from __future__ import annotations

import pytest

from workloom.domain.errors import ValidationFailed
from workloom.domain.queries import Filter, ListQuery, decode_cursor, parse_sort

SORTABLE = ("created_at", "updated_at", "priority", "status", "title", "identifier")


@pytest.fixture
async def board(h):
    """Five tasks created a second apart; WL-5 completed. Returns them by identifier."""
    specs = [
        ("Write report", "alpha", "high"),
        ("Review report", "alpha", "low"),
        ("Deploy 100% safely", "beta", "urgent"),
        ("write tests", None, "medium"),
        ("Fix bug", "beta", "high"),
    ]
    made = {}
    for title, queue, priority in specs:
        task = await h.create(title, queue=queue, priority=priority)
        made[task.identifier] = task
        h.clock.advance(1)
    claims = await h.claim("beta", limit=5)
    await h.complete(next(c for c in claims if c.task.identifier == "WL-5"), "fixed")
    await h.release(next(c for c in claims if c.task.identifier == "WL-3"))
    return made


async def identifiers(h, **query):
    return [t.identifier for t in (await h.list(ListQuery(**query))).items]


def sort(text):
    return parse_sort(text, SORTABLE, "created_at")


async def test_filters(h, board):
    assert await identifiers(h, filters=[Filter("status", "eq", "completed")]) == ["WL-5"]
    assert await identifiers(h, filters=[Filter("queue", "eq", "beta")], sort=sort("identifier")) == ["WL-3", "WL-5"]
    assert await identifiers(h, filters=[Filter("queue", "eq", None)]) == ["WL-4"]
    assert await identifiers(h, filters=[Filter("priority", "in", ["high", "urgent"])], sort=sort("identifier")) == [
        "WL-1",
        "WL-3",
        "WL-5",
    ]
    since = board["WL-3"].created_at
    assert await identifiers(h, filters=[Filter("created_at", "gte", since)], sort=sort("identifier")) == [
        "WL-3",
        "WL-4",
        "WL-5",
    ]
    assert await identifiers(
        h,
        filters=[Filter("created_at", "lte", since), Filter("status", "in", ["ready", "in_progress"])],
        sort=sort("identifier"),
    ) == ["WL-1", "WL-2", "WL-3"]


async def test_sort_orders_by_each_key_in_turn(h, board):
    assert await identifiers(h, sort=sort("-priority,created_at")) == ["WL-3", "WL-1", "WL-5", "WL-4", "WL-2"]
    assert await identifiers(h, sort=sort("-identifier")) == ["WL-5", "WL-4", "WL-3", "WL-2", "WL-1"]
    assert await identifiers(h, sort=sort("title")) == ["WL-3", "WL-5", "WL-2", "WL-1", "WL-4"]


async def test_count_is_the_total_not_the_page(h, board):
    page = await h.list(ListQuery(limit=2, count=True, filters=[Filter("status", "eq", "ready")]))
    assert page.total == 4
    assert len(page.items) == 2
    assert page.next_cursor is not None
    assert (await h.list(ListQuery(limit=2))).total is None


@pytest.mark.parametrize(
    "order", ["-priority", "priority,-identifier", "identifier", "-title", "status", "-created_at", "updated_at,title"]
)
async def test_cursor_pages_visit_every_task_once_in_order(h, board, order):
    everything = await identifiers(h, sort=sort(order))
    seen, cursor = [], None
    for _ in range(10):
        page = await h.list(ListQuery(sort=sort(order), limit=2, after=decode_cursor(cursor) if cursor else None))
        seen += [t.identifier for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == everything
    assert sorted(seen) == sorted(board)


async def test_search_matches_title_or_identifier(h, board):
    assert await identifiers(h, search="REPORT", sort=sort("identifier")) == ["WL-1", "WL-2"]
    assert await identifiers(h, search="write", sort=sort("identifier")) == ["WL-1", "WL-4"]
    assert await identifiers(h, search="wl-3") == ["WL-3"]
    assert await identifiers(h, search="%") == ["WL-3"]  # wildcards are matched literally
    assert await identifiers(h, search="_") == []
    assert await identifiers(h, search="nothing like this") == []


def test_unknown_sort_fields_are_refused_before_any_query():
    with pytest.raises(ValidationFailed):
        sort("-password")


async def test_timeline_is_ordered_by_task_sequence(h):
    await h.queue("q", initial_interval_seconds=1)
    task = await h.create("traced", queue="q")
    other = await h.create("interleaved", queue="q")
    first = await h.claim_one("q")
    await h.fail(first, "flaky")
    await h.advance(1)
    for claim in await h.claim("q", limit=2):
        await h.complete(claim, claim.task.title)

    timeline = await h.timeline(task.id)
    assert [e.task_sequence for e in timeline] == list(range(1, len(timeline) + 1))
    assert [e.sequence for e in timeline] == sorted(e.sequence for e in timeline)
    assert {e.task_id for e in timeline} == {task.id}
    assert [e.type for e in timeline] == [
        "task.created",
        "task.ready",
        "run.queued",
        "run.claimed",
        "task.in_progress",
        "run.failed",
        "task.scheduled",
        "run.queued",
        "task.ready",
        "run.claimed",
        "task.in_progress",
        "run.completed",
        "task.completed",
    ]
    assert timeline[0].actor == h.principal.actor
    assert timeline[3].actor.ref == "worker-1"

    other_timeline = await h.timeline(other.id)
    assert [e.task_sequence for e in other_timeline] == list(range(1, len(other_timeline) + 1))

    tail = await h.wl.events.timeline(h.principal, task.id, after_sequence=10)
    assert [e.task_sequence for e in tail] == [11, 12, 13]
    assert tail == timeline[10:]
