"""Workspace event feeds (what ``/v1/events/stream`` sends): every stream of a workspace in one process is
fed by one reader at the end of the log; these pin what each stream must still see through it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from harness import Harness

from workloom.domain.models import Event
from workloom.engine import tasks
from workloom.engine.events import READ_BATCH, Feed
from workloom.engine.tasks import NewTask
from workloom.store import events as store
from workloom.store.database import plain_url

PATIENCE = 20.0  # seconds a feed may take to deliver what was committed (far more than it needs)


async def take(feed: Feed, count: int) -> list[Event]:
    """The feed's next ``count`` events, waiting for them as a stream would (bounded)."""
    taken: list[Event] = []
    deadline = time.monotonic() + PATIENCE
    while len(taken) < count:
        assert time.monotonic() < deadline, f"only {len(taken)} of {count} events arrived"
        events = await feed.next(0.2)
        assert events is not None, "the feed ended"
        taken.extend(events)
    return taken


async def log_after(h: Harness, after: int) -> list[Event]:
    """The workspace's log as the database has it, read directly, after sequence ``after``."""
    found: list[Event] = []
    async with h.wl.db.read() as conn:
        while batch := (await store.event_list_after(conn, h.principal.workspace_id, after=after, limit=1000))[0]:
            found.extend(batch)
            after = found[-1].sequence
    return found


async def create_many(h: Harness, count: int, queue: str = "q") -> None:
    await h.do(lambda u: tasks.create_many(u, [NewTask(title=f"t{i}", queue=queue) for i in range(count)]))


async def test_many_feeds_at_the_end_of_the_log_each_get_every_change_they_asked_for_in_order(h: Harness) -> None:
    await h.queue("q")
    start = await h.wl.events.last_sequence(h.principal)
    everything = [h.wl.events.subscribe(h.principal, start) for _ in range(150)]
    created_only = [h.wl.events.subscribe(h.principal, start, types=["task.created"]) for _ in range(50)]
    # Writers in parallel, so commits interleave while the feeds follow.
    await asyncio.gather(*(h.create(f"w{i}", queue="q") for i in range(12)), create_many(h, 20))
    log = await log_after(h, start)
    created = [e for e in log if e.type == "task.created"]
    assert len(created) == 32
    for feed in everything:
        assert [e.sequence for e in await take(feed, len(log))] == [e.sequence for e in log]
    for feed in created_only:
        assert [e.sequence for e in await take(feed, len(created))] == [e.sequence for e in created]
    for feed in everything + created_only:
        feed.close()


async def test_a_feed_whose_stream_stops_taking_holds_back_no_other_and_later_gets_all_it_missed(
    h: Harness,
) -> None:
    await h.queue("q")
    start = await h.wl.events.last_sequence(h.principal)
    stalled = h.wl.events.subscribe(h.principal, start, buffer=5)
    lively = h.wl.events.subscribe(h.principal, start)
    assert await stalled.next(0.05) == []  # following the live end, as a stream does once it is open
    for i in range(10):
        await h.create(f"t{i}", queue="q")
        await create_many(h, 3)
    log = await log_after(h, start)
    assert len(log) > 5 * 4  # well past what the stalled feed may keep
    assert [e.sequence for e in await take(lively, len(log))] == [e.sequence for e in log]
    # The stalled stream comes back: everything, once each, in order, none lost while it was full.
    assert [e.sequence for e in await take(stalled, len(log))] == [e.sequence for e in log]
    await h.create("after", queue="q")
    assert (await take(stalled, 1))[0].type == "task.created"
    stalled.close()
    lively.close()


async def test_a_feed_far_behind_catches_up_and_then_follows_without_a_gap(h: Harness) -> None:
    await h.queue("q")
    await create_many(h, READ_BATCH)  # several full reads of history
    behind = h.wl.events.subscribe(h.principal, 0)
    first = await take(behind, READ_BATCH)
    # Writes go on while it reads the rest of the history and joins the live end.
    writing = asyncio.gather(*(create_many(h, 10) for _ in range(5)))
    more = await take(behind, READ_BATCH)
    await writing
    log = await log_after(h, 0)
    rest = await take(behind, len(log) - len(first) - len(more))
    assert [e.sequence for e in first + more + rest] == [e.sequence for e in log]
    behind.close()


async def test_stopping_ends_every_feed(h: Harness) -> None:
    await h.queue("q")
    stop = asyncio.Event()
    start = await h.wl.events.last_sequence(h.principal)
    feeds = [h.wl.events.subscribe(h.principal, start, stop=stop) for _ in range(20)]
    await h.create("one", queue="q")
    for feed in feeds:
        assert len(await take(feed, 1)) >= 1
    waiting = [asyncio.ensure_future(feed.next(PATIENCE)) for feed in feeds]
    stop.set()
    async with asyncio.timeout(5):
        ended = await asyncio.gather(*waiting)
    assert all(events is None or events == [] for events in ended)
    for feed in feeds:
        assert await feed.next(0.1) is None
        feed.close()


async def test_feeds_of_two_workspaces_see_only_their_own(h: Harness) -> None:
    other = await h.other_workspace("globex")
    await h.queue("q")
    await other.queue("q")
    ours = h.wl.events.subscribe(h.principal, await h.wl.events.last_sequence(h.principal))
    theirs = other.wl.events.subscribe(other.principal, await other.wl.events.last_sequence(other.principal))
    mine = await h.create("ours", queue="q")
    yours = await other.create("theirs", queue="q")
    assert {e.task_id for e in await take(ours, 1)} == {mine.id}
    assert {e.task_id for e in await take(theirs, 1)} == {yours.id}
    assert await ours.next(0.3) == []
    ours.close()
    theirs.close()


async def test_the_engine_stops_only_once_a_read_for_the_streams_has_ended(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream's read is not cancelled mid-query (it would lose its connection unclosed, and on SQLite hold
    # the write lock): stopping waits for it, so that no connection outlives the engine.
    await h.queue("q")
    reading, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []
    read = h.wl.events._read_batch

    async def held_up(workspace_id: str, cursor: int) -> Any:
        reading.set()
        await release.wait()
        try:
            return await read(workspace_id, cursor)
        finally:
            order.append("read ended")

    monkeypatch.setattr(h.wl.events, "_read_batch", held_up)
    catching_up = asyncio.ensure_future(h.wl.events.subscribe(h.principal, 0).next(PATIENCE))
    await asyncio.wait_for(reading.wait(), PATIENCE)
    catching_up.cancel()  # the stream stopped, as a stopping server stops its streams first

    async def close() -> None:
        await h.wl.events.close()
        order.append("closed")

    closing = asyncio.ensure_future(close())
    finished, _ = await asyncio.wait({closing}, timeout=0.5)
    assert not finished, "the streams' reader closed while its read was still running"
    release.set()
    await asyncio.wait_for(closing, PATIENCE)
    assert order == ["read ended", "closed"]
    assert catching_up.cancelled()


async def test_feeds_go_on_after_the_log_could_not_be_read_for_a_moment(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.queue("q")
    start = await h.wl.events.last_sequence(h.principal)
    feed = h.wl.events.subscribe(h.principal, start)
    assert await feed.next(0.05) == []
    read = h.wl.events._read_batch
    failures = 0

    async def failing_twice(workspace_id: str, cursor: int) -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise ConnectionError("database went away")
        return await read(workspace_id, cursor)

    monkeypatch.setattr(h.wl.events, "_read_batch", failing_twice)
    monkeypatch.setattr(h.wl.events, "poll_seconds", 0.05)
    await h.create("after the outage", queue="q")
    log = await log_after(h, start)
    assert [e.sequence for e in await take(feed, len(log))] == [e.sequence for e in log]
    assert failures == 2
    feed.close()


_RAW_EVENT = (
    "INSERT INTO events (workspace_id, type, actor_kind, actor_ref, payload, created_at, commit_horizon)"
    " SELECT $1, $2, 'automation', 'test', '{}'::jsonb, now(), pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_feed_waits_for_a_transaction_that_took_a_smaller_number_after_the_later_one_began(
    h: Harness, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequence numbers are taken before commit, so ``late`` can commit after ``early`` although its number
    is smaller. Here the transaction that writes ``late`` takes its transaction id *after* the statement
    writing ``early`` took its snapshot, and its number before ``early`` took its own (the statement waits
    in between): a horizon taken from the writing statement's snapshot let a stream pass ``early`` while
    ``late`` was in flight, and it never saw ``late``."""
    monkeypatch.setattr(h.wl.events, "poll_seconds", 0.02)  # these raw writes wake no stream: it polls
    await h.queue("q")
    start = await h.wl.events.last_sequence(h.principal)
    feed = h.wl.events.subscribe(h.principal, start)
    assert await feed.next(0.05) == []
    url = plain_url(migrated_url)
    slow, other = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        in_statement = await slow.fetchval("SELECT pg_backend_pid()")
        early = asyncio.ensure_future(
            slow.execute(_RAW_EVENT + " FROM (SELECT pg_sleep(0.5)) AS waited", h.principal.workspace_id, "early")
        )
        async with asyncio.timeout(10):  # the slow statement has taken its snapshot and is waiting
            while not await other.fetchval(  # noqa: ASYNC110 (the server's view, polled)
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'", in_statement
            ):
                await asyncio.sleep(0.01)
        writing_late = other.transaction()
        await writing_late.start()
        await other.execute(_RAW_EVENT, h.principal.workspace_id, "late")
        await early
        assert await feed.next(0.3) == []  # "early" committed, but "late" may yet come before it (15 polls)
        await writing_late.commit()
        log = await log_after(h, start)
        assert [e.type for e in log] == ["late", "early"]
        assert [e.type for e in await take(feed, 2)] == ["late", "early"]
    finally:
        await slow.close()
        await other.close()
        feed.close()
