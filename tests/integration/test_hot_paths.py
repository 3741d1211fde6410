"""The hot paths behave as the plain ones did: cached queues, statements run straight through the driver,
task numbers reserved outside the creating transaction, and wake-ups sent to other processes after commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, Protocol

import aiosqlite
import asyncpg
import pytest
import sqlalchemy as sa
from harness import Harness

from workloom.domain.actors import Actor
from workloom.domain.clock import ManualClock
from workloom.domain.errors import NotFound
from workloom.domain.models import Claim, Run, Task
from workloom.domain.queries import ListQuery
from workloom.engine import queues, runs, tasks
from workloom.engine.caches import QUEUE_TTL_SECONDS, QueueCache
from workloom.engine.queues import QueueSettings
from workloom.engine.service import Workloom
from workloom.engine.signals import queues_changed_key
from workloom.engine.tasks import NewTask
from workloom.engine.unit import Unit
from workloom.store import fast, held
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store.database import plain_url
from workloom.store.fast import Statement, Write, driver, on_sqlite_thread, one_of, write_all
from workloom.store.notify import Listener, Notifier
from workloom.store.schema import task_dependencies
from workloom.store.schema import tasks as tasks_table

POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
# An upper bound on waiting for a wake-up to cross PostgreSQL; the tests end as soon as it arrives.
DELIVERY_TIMEOUT = 10.0


class FakeMonotonic:
    """The monotonic time a ``QueueCache`` reads, moved only by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache_on_fake_time(wl: Workloom) -> FakeMonotonic:
    """Give ``wl`` a queue cache whose time-to-live runs on a fake monotonic clock."""
    monotonic = FakeMonotonic()
    cache = QueueCache(monotonic=monotonic)
    wl.runner.queue_cache = cache
    wl.signals.observe(cache.on_keys)
    return monotonic


async def lease_of_next_claim(h: Harness, queue: str) -> timedelta:
    """Create a task in ``queue`` and claim it: how long the lease it was given runs."""
    await h.create("leased", queue=queue)
    claim = await h.claim_one(queue)
    return claim.lease_until - h.clock.now()


class Refused(Exception):
    """Raised inside a unit of work to roll it back."""


# -- 1. cached queues ------------------------------------------------------------------------------------


async def test_a_queue_update_applies_to_the_very_next_claim_and_create(h: Harness) -> None:
    await h.queue("q", lease_seconds=10)
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=10)  # the queue is now cached

    await h.do(lambda u: queues.update(u, "q", QueueSettings(lease_seconds=60)))
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=60)

    # A create reads the cached queue too: once the queue starts tasks by hand, a new task gets no run.
    await h.do(lambda u: queues.update(u, "q", QueueSettings(start_mode="manual")))
    task = await h.create("waits for a start", queue="q")
    assert await h.runs(task.id) == []
    assert await h.claim("q") == []


async def test_another_process_s_queue_update_is_seen_once_the_cache_entry_expires(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    monotonic = cache_on_fake_time(h.wl)
    await h.queue("q", lease_seconds=10)
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=10)

    other = Workloom.from_url(migrated_url, clock)  # no LISTEN connection: no wake-up reaches ``h``
    try:
        await Harness(other, h.principal, clock).do(lambda u: queues.update(u, "q", QueueSettings(lease_seconds=60)))
    finally:
        await other.stop()

    # The documented window: until its entry expires, this process still uses the queue it read.
    monotonic.now = QUEUE_TTL_SECONDS - 0.1
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=10)
    monotonic.now = QUEUE_TTL_SECONDS
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=60)


@POSTGRES_ONLY
async def test_another_process_s_queue_update_reaches_this_cache_over_listen(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    cache_on_fake_time(h.wl)  # the entry never expires here: only the wake-up can drop it
    await h.wl.start(ticker=False)
    await h.queue("q", lease_seconds=10)
    assert await lease_of_next_claim(h, "q") == timedelta(seconds=10)

    other = Workloom.from_url(migrated_url, clock)
    try:
        with h.wl.signals.waiter(queues_changed_key(h.principal.workspace_id)) as changed:
            await Harness(other, h.principal, clock).do(
                lambda u: queues.update(u, "q", QueueSettings(lease_seconds=60))
            )
            assert await changed.wait(DELIVERY_TIMEOUT), "the queue change never reached this process"
    finally:
        await other.stop()

    assert await lease_of_next_claim(h, "q") == timedelta(seconds=60)


# -- 2. statements through the driver stay inside the transaction ----------------------------------------


@POSTGRES_ONLY
async def test_a_rolled_back_create_leaves_no_task_and_no_events(h: Harness) -> None:
    before = await h.wl.events.last_sequence(h.principal)
    made: list[Task] = []

    async def create_then_refuse(u: Unit) -> None:
        # No queue, so the task's insert is the transaction's first statement (numbers come from elsewhere).
        made.append(await tasks.create(u, NewTask(title="never")))
        await u.flush()  # its events are written too
        raise Refused

    with pytest.raises(Refused):
        await h.do(create_then_refuse)

    assert len(made) == 1
    with pytest.raises(NotFound):
        await h.task(made[0].id)
    with pytest.raises(NotFound):
        await h.task(made[0].identifier)
    assert await h.wl.events.last_sequence(h.principal) == before
    async with h.wl.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(tasks_table))).scalar_one() == 0

    kept = await h.create("kept")
    assert [t.id for t in (await h.list(ListQuery(limit=100))).items] == [kept.id]


@POSTGRES_ONLY
async def test_a_rolled_back_update_run_first_in_its_transaction_changes_nothing(h: Harness) -> None:
    task = await h.create("before")
    changed: list[bool] = []

    async def update_then_refuse() -> None:
        async with h.wl.db.transaction() as conn:
            changed.append(await task_store.task_update(conn, task.id, {"title": "after"}))
            raise Refused

    with pytest.raises(Refused):
        await update_then_refuse()
    assert changed == [True]
    assert (await h.task(task.id)).title == "before"


# -- 3. task numbers -------------------------------------------------------------------------------------


async def _create_batch(h: Harness, batch: int) -> list[Task]:
    return await h.do(lambda u: tasks.create_many(u, [NewTask(f"batch {batch}.{j}", queue="q") for j in range(5)]))


async def test_concurrent_creates_in_two_processes_never_share_a_task_number(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    other = Workloom.from_url(migrated_url, clock)
    try:
        second = Harness(other, h.principal, clock)
        async with asyncio.timeout(60):
            singles, batches = await asyncio.gather(
                asyncio.gather(*((h if i % 2 else second).create(f"single {i}", queue="q") for i in range(40))),
                asyncio.gather(*(_create_batch(h if i % 2 else second, i) for i in range(4))),
            )
    finally:
        await other.stop()

    made = [*singles, *(task for batch in batches for task in batch)]
    assert len(made) == 60
    numbers = [t.number for t in made]
    assert len(set(numbers)) == 60, sorted(numbers)
    assert min(numbers) >= 1
    for batch in batches:  # a batch is numbered in the order given
        assert [t.number for t in batch] == list(range(batch[0].number, batch[0].number + 5))

    # As stored: every task, each under its own identifier.
    stored = (await h.list(ListQuery(limit=100))).items
    assert {t.id: t.number for t in stored} == {t.id: t.number for t in made}
    for task in made[:5]:
        assert (await h.task(task.identifier)).id == task.id


# -- 4. wake-ups between processes -----------------------------------------------------------------------


class Collected:
    """The keys a ``Listener`` hands over, and a way to wait (bounded) until some have arrived."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._arrived = asyncio.Event()

    def __call__(self, keys: list[str]) -> None:
        self.keys.extend(k for k in keys if k != "*")
        self._arrived.set()

    async def until(self, wanted: set[str]) -> None:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while not wanted <= set(self.keys):
                self._arrived.clear()
                await self._arrived.wait()


@POSTGRES_ONLY
async def test_keys_sent_by_a_notifier_reach_a_listener_each_once(migrated_url: str) -> None:
    collected = Collected()
    listener = Listener(migrated_url, collected)
    notifier = Notifier(migrated_url)
    await listener.start()
    try:
        assert listener.connected.is_set()
        notifier.send({"queue:q_one", "work:ws_one"})
        await collected.until({"queue:q_one", "work:ws_one"})

        # More than fits one NOTIFY payload (8000 bytes): split, and every key still arrives once.
        many = {f"events:ws_{i:05d}_{'x' * 40}" for i in range(600)}
        assert sum(len(k) + 1 for k in many) > 30_000
        notifier.send(many)
        await collected.until(many)
        assert sorted(k for k in collected.keys if k in many) == sorted(many)
    finally:
        await notifier.close()
        await listener.stop()


@POSTGRES_ONLY
async def test_a_notifier_that_found_another_listener_sends_without_looking_again(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks = 0
    fetchval = asyncpg.connection.Connection.fetchval

    async def counted(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal looks
        looks += "pg_stat_activity" in query
        return await fetchval(conn, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetchval", counted)
    collected = Collected()
    listener = Listener(migrated_url, collected)  # another process's
    notifier = Notifier(migrated_url)
    await listener.start()
    await notifier.start()  # looks, and finds it
    try:
        for i in range(5):
            notifier.send({f"test:{i}"})
            await collected.until({f"test:{i}"})
        # Five rounds of NOTIFY, one look at who listens (trusted for ALONE_SECONDS).
        assert looks == 1
    finally:
        await notifier.close()
        await listener.stop()


@POSTGRES_ONLY
async def test_only_committed_transactions_wake_other_processes(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    collected = Collected()
    listener = Listener(migrated_url, collected)
    other = Workloom.from_url(migrated_url, clock)
    await listener.start()
    try:
        second = Harness(other, h.principal, clock)

        async def wake_then_refuse(u: Unit) -> None:
            u.wake("test:rolled-back")
            raise Refused

        with pytest.raises(Refused):
            await second.do(wake_then_refuse)

        async def wake(u: Unit) -> None:
            u.wake("test:committed")

        await second.do(wake)
        # Both would have been sent by one notifier connection in order: once the second has arrived,
        # the first would have too.
        await collected.until({"test:committed"})
        assert "test:rolled-back" not in collected.keys
    finally:
        await other.stop()
        await listener.stop()


def waking(key: str) -> Callable[[Unit], Awaitable[None]]:
    async def op(u: Unit) -> None:
        u.wake(key)

    return op


@POSTGRES_ONLY
async def test_a_process_alone_sends_no_wake_ups_until_another_listener_says_hello(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    # ``h.wl`` has no listener of its own: a second engine, started, is the process that writes.
    writer = Workloom.from_url(migrated_url, clock)
    await writer.start(ticker=False)
    raw = await asyncpg.connect(plain_url(migrated_url))
    heard: list[str] = []
    await raw.add_listener("workloom", lambda *args: heard.append(args[-1]))
    try:
        second = Harness(writer, h.principal, clock)

        async def wake(key: str) -> None:
            await second.do(waking(key))

        await wake("test:alone")
        # A listener of another process: its hello reaches the writer, which sends from then on.
        collected = Collected()
        other = Listener(migrated_url, collected)
        await other.start()
        try:
            # Its hello reaches the writer a moment after it connects; wake-ups sent from then on arrive.
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                while "test:heard" not in collected.keys:
                    await wake("test:heard")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(collected.until({"test:heard"}), 0.1)
        finally:
            await other.stop()
        # Only "hello" and what followed it were ever on the channel: nothing was sent while alone.
        assert "test:alone" not in " ".join(heard) and "test:alone" not in collected.keys
    finally:
        await raw.close()
        await writer.stop()


@POSTGRES_ONLY
async def test_a_process_s_own_wake_ups_are_not_delivered_to_it_twice(
    h: Harness, migrated_url: str, clock: ManualClock
) -> None:
    this = Workloom.from_url(migrated_url, clock)
    that = Workloom.from_url(migrated_url, clock)
    seen: list[str] = []
    after = asyncio.Event()

    def observe(keys: Iterable[str]) -> None:
        seen.extend(keys)
        if "test:after" in seen:
            after.set()

    this.signals.observe(observe)
    await this.start(ticker=False)
    await that.start(ticker=False)  # another listener: ``this`` does send its wake-ups
    try:
        await Harness(this, h.principal, clock).do(waking("test:own"))
        await Harness(that, h.principal, clock).do(waking("test:after"))
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await after.wait()
        # Sent before "test:after" on the same channel, its echo would have arrived first.
        assert seen.count("test:own") == 1
    finally:
        await this.stop()
        await that.stop()


# -- 7. one_of -----------------------------------------------------------------------------------------

_BY_ID = Statement(lambda dialect: sa.select(tasks_table.c.id).where(one_of(tasks_table.c.id, "ids", dialect)))
_BY_NUMBER = Statement(
    lambda dialect: sa.select(tasks_table.c.number).where(one_of(tasks_table.c.number, "numbers", dialect))
)


async def test_one_of_matches_exactly_the_listed_rows_for_no_one_and_many(h: Harness) -> None:
    made = await h.do(lambda u: tasks.create_many(u, [NewTask(title=f"t{i}") for i in range(30)]))
    wanted = made[::3]
    missing = [f"task_missing{i}" for i in range(300)]

    async with h.wl.db.read() as conn:
        assert await _BY_ID.rows(conn, {"ids": []}) == []
        assert await _BY_NUMBER.rows(conn, {"numbers": []}) == []

        found = await _BY_ID.rows(conn, {"ids": [t.id for t in wanted] + missing})
        assert sorted(row["id"] for row in found) == sorted(t.id for t in wanted)

        found = await _BY_ID.rows(conn, {"ids": [t.id for t in made]})
        assert sorted(row["id"] for row in found) == sorted(t.id for t in made)

        numbers = [t.number for t in wanted] + list(range(10_000, 10_400))
        found = await _BY_NUMBER.rows(conn, {"numbers": numbers})
        assert sorted(row["number"] for row in found) == sorted(t.number for t in wanted)


# -- 8. round trips of a worker's loop ---------------------------------------------------------------------


class RoundTrips:
    """What asyncpg sends to the server (each statement, BEGIN and COMMIT included) while ``on``, by first
    word; the wake-ups (``pg_notify``, and whether anyone else listens, sent after commit on a connection of
    their own) left out, and so is whatever another thread sends meanwhile (the test databases dropped in the
    background, ``databases.PostgresServer.drop_later``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        self._on = False
        self._thread = threading.get_ident()
        connection = asyncpg.connection.Connection
        for name in ("_execute", "execute", "executemany"):
            monkeypatch.setattr(connection, name, self._counting(name, getattr(connection, name)))
        # What SQLAlchemy sends goes through statements it prepared (and keeps) on the connection.
        prepared = asyncpg.prepared_stmt.PreparedStatement
        fetch = prepared.fetch

        async def fetch_counted(statement: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.sent.append(statement.get_query().split(None, 1)[0].upper())
            return await fetch(statement, *args, **kwargs)

        monkeypatch.setattr(prepared, "fetch", fetch_counted)

    @property
    def on(self) -> bool:
        """Counting, and in the thread that counts."""
        return self._on and threading.get_ident() == self._thread

    @on.setter
    def on(self, value: bool) -> None:
        self._on = value

    def _counting(self, name: str, method: Any) -> Any:
        async def counted(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            # ``execute`` with arguments goes on to ``_execute``: count it there, once.
            wakeup = "pg_notify" in query or "pg_stat_activity" in query  # the notifier's, after commit
            if self.on and not wakeup and not (name == "execute" and args):
                self.sent.append(query.split(None, 1)[0].rstrip(";").upper())
            return await method(conn, query, *args, **kwargs)

        return counted


async def counting_after_a_warm_queue(h: Harness, monkeypatch: pytest.MonkeyPatch, queue: str) -> RoundTrips:
    """Round trips counted (once turned on) after two creates in ``queue``: it exists and is in the cache."""
    await h.create("creates the queue", queue=queue)
    await h.create("reads it into the cache", queue=queue)
    return RoundTrips(monkeypatch)


class Counter(Protocol):
    on: bool


async def _complete_and_claim_counted(h: Harness, trips: Counter) -> tuple[Claim, Run, list[Claim]]:
    """Two tasks queued, the first claimed; then, counted by ``trips``, its completion claiming the second."""
    await h.create("first", queue="loop")
    await h.create("second", queue="loop")
    claim = await h.claim_one("loop")
    trips.on = True
    done, claimed = await h.do(
        lambda u: runs.complete_and_claim(u, claim.run.id, claim.claim_token, {"ok": 1}, None, 1, None)
    )
    trips.on = False
    return claim, done, claimed


@POSTGRES_ONLY
async def test_a_completion_that_claims_the_next_task_is_four_round_trips_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = RoundTrips(monkeypatch)
    claim, done, claimed = await _complete_and_claim_counted(h, trips)

    # Begin; the run and its task read and locked; in one statement both completed, with whether anything
    # depends on the task, the completion's two events, and the next run claimed with its task moved to in
    # progress and its two events; commit.
    assert trips.sent == ["BEGIN", "SELECT", "WITH", "COMMIT"]
    assert done.status == "completed" and [c.task.title for c in claimed] == ["second"]
    assert claimed[0].task.status == "in_progress" and claimed[0].run.status == "claimed"
    first = await h.task(claim.task.id)
    assert first.status == "completed" and first.output == {"ok": 1} and first.attempts == 1
    assert [e.type for e in await h.wl.events.timeline(h.principal, first.id)][-2:] == [
        "run.completed",
        "task.completed",
    ]
    assert [e.type for e in await h.wl.events.timeline(h.principal, claimed[0].task.id)][-2:] == [
        "run.claimed",
        "task.in_progress",
    ]


class HandOvers:
    """What goes to aiosqlite's thread while ``on``: a statement's first word, statements sent in one
    hand-over (``fast._send``) joined by ``+``, or the name of the call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        self.on = False
        execute, send = aiosqlite.Connection._execute, fast._send

        async def counted(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on:
                given = (*args, *getattr(fn, "args", ()))
                sql = next((a for a in given if isinstance(a, str)), None)
                runs = next((a for a in given if isinstance(a, list)), None)
                if sql is None and runs is not None:  # statements in one hand-over (``fast._sqlite_run_all``)
                    sql = "+".join(run[0].split(None, 1)[0] for run in runs)
                self.sent.append(sql.split(None, 1)[0].upper() if sql else getattr(fn, "__name__", "?"))
            return await execute(conn, fn, *args, **kwargs)

        def sent_together(conn: Any, runs: list[tuple[str, Any, bool]]) -> Any:
            if self.on:
                self.sent.append("+".join(run[0].split(None, 1)[0].upper() for run in runs))
            return send(conn, runs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        monkeypatch.setattr(fast, "_send", sent_together)


@SQLITE_ONLY
async def test_a_completion_that_claims_the_next_task_is_one_hand_over_per_statement_on_sqlite(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = HandOvers(monkeypatch)
    claim, done, claimed = await _complete_and_claim_counted(h, trips)

    # Through SQLAlchemy's adapter each statement took four (cursor, execute, fetch, close), and the pool's
    # rollback after COMMIT one more; straight through the driver each statement is at most one, writes
    # that run one after another go together (the run and task completed, then the task's dependents
    # read), and a connection taken back after its commit is not rolled back. BEGIN IMMEDIATE goes with
    # the first statement (through SQLAlchemy's adapter it took three: cursor, BEGIN, close).
    assert trips.sent == [
        "BEGIN+SELECT",  # the transaction begun; the run and its task, locked
        "UPDATE+UPDATE+SELECT",  # both completed; whether a task depends on that one
        *("SELECT", "UPDATE", "UPDATE"),  # the next run found, claimed, its task moved
        "INSERT",  # the four events
        "commit",
    ], " ".join(trips.sent)
    assert done.status == "completed" and [c.task.title for c in claimed] == ["second"]
    assert (await h.task(claim.task.id)).status == "completed"
    assert claimed[0].task.status == "in_progress" and claimed[0].run.status == "claimed"


@SQLITE_ONLY
@pytest.mark.parametrize("first", ["driver", "sqlalchemy", "sent"])
async def test_a_unit_s_first_statement_begins_its_transaction_on_sqlite(h: Harness, first: str) -> None:
    # BEGIN IMMEDIATE goes with a unit's first statement, whichever way that statement goes to SQLite (one
    # hand-over to its thread, SQLAlchemy's adapter, writes sent ahead); what the unit wrote before it
    # failed is undone, as it was when SQLAlchemy began every unit itself.
    task = await h.create("before")

    async def update_then_refuse() -> None:
        async with h.wl.db.transaction() as conn:
            if first == "driver":
                await task_store.task_update(conn, task.id, {"title": "after"})
            elif first == "sqlalchemy":
                await conn.execute(sa.update(tasks_table).values(title="after").where(tasks_table.c.id == task.id))
            else:
                write = Write(Statement(sa.update(tasks_table).values(title=sa.bindparam("t"))), [{"t": "after"}])
                sent = fast.write_all_soon(conn, [write])
                assert sent is not None
                await sent.done()
            raw = conn.sync_connection.connection.dbapi_connection._connection._conn  # type: ignore[union-attr]
            assert raw.in_transaction
            raise Refused

    with pytest.raises(Refused):
        await update_then_refuse()
    assert (await h.task(task.id)).title == "before"
    await h.do(lambda u: tasks.patch(u, task.id, {"title": "kept"}))
    assert (await h.task(task.id)).title == "kept"


@SQLITE_ONLY
async def test_a_unit_whose_begin_failed_begins_with_its_next_statement_on_sqlite(h: Harness, tmp_path: Any) -> None:
    # Another process holds SQLite's write lock past the busy timeout: the unit's first statement fails
    # with BEGIN IMMEDIATE's error, and its next statement tries BEGIN again (it must not run outside a
    # transaction, committed at once).
    task = await h.create("before")
    async with h.wl.db.read() as conn:
        await conn.exec_driver_sql("PRAGMA busy_timeout = 50")
        path = (await conn.exec_driver_sql("PRAGMA database_list")).all()[0][2]
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        async with h.wl.db.transaction() as conn:
            with pytest.raises(sa.exc.DBAPIError, match="locked"):
                await task_store.task_update(conn, task.id, {"title": "locked out"})
            other.execute("ROLLBACK")
            await task_store.task_update(conn, task.id, {"title": "after"})
            raw = conn.sync_connection.connection.dbapi_connection._connection._conn  # type: ignore[union-attr]
            assert raw.in_transaction
            await conn.rollback()
    finally:
        other.close()
    assert (await h.task(task.id)).title == "before"


@SQLITE_ONLY
async def test_a_connection_given_back_in_the_middle_of_a_transaction_is_rolled_back_on_sqlite(h: Harness) -> None:
    # The pool no longer rolls back every connection it takes back: one left inside a transaction that
    # SQLAlchemy did not see begin (its own it ends itself) still is, or the next unit could not begin.
    task = await h.create("kept")
    async with h.wl.db.engine.connect() as conn:
        adapted = (await conn.get_raw_connection()).dbapi_connection
        await on_sqlite_thread(adapted, "BEGIN IMMEDIATE")
        await on_sqlite_thread(adapted, "UPDATE tasks SET title = 'abandoned'")
        assert not conn.in_transaction()
    await h.create("next")
    assert (await h.task(task.id)).title == "kept"


@POSTGRES_ONLY
async def test_creating_a_task_is_one_statement_on_its_connection_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = await counting_after_a_warm_queue(h, monkeypatch, "inbox")

    trips.on = True
    task = await h.create("one more", queue="inbox", data={"n": 1})
    trips.on = False

    # The number reserved (on a connection of its own); task, run and three events in one statement,
    # which is the whole transaction: sent without BEGIN, it needs no COMMIT.
    assert trips.sent == ["UPDATE", "WITH"]
    assert task.status == "ready" and task.number == 3
    assert [e.type for e in await h.wl.events.timeline(h.principal, task.id)] == [
        "task.created",
        "task.ready",
        "run.queued",
    ]
    (run,) = await h.runs(task.id)
    assert run.status == "queued" and (await h.claim_one("inbox")).task.id != task.id  # the older one first


async def _claim_plan(h: Harness, queue_name: str, statement: Statement = held._CLAIM_MOVING_TASKS) -> str:
    """PostgreSQL's plan for claiming from ``queue_name`` (the claim statement explained, not run)."""
    queue = await h.do(lambda u: queues.get(u, queue_name))
    async with h.wl.db.transaction() as conn:
        compiled = statement._pg(conn)
        params = {
            "workspace_id": h.principal.workspace_id,
            "queue_id": queue.id,
            "limit": 1,
            "prefix": "x",
            "now": h.clock.now(),
            "lease": h.clock.now(),
            "kind": "automation",
            "ref": "plan",
            "idempotency_key": None,
            "to_status": "in_progress",
            "events": 2,
            "claimers": [{"n": n, "kind": "automation", "ref": f"w{n}", "prefix": "x"} for n in range(1, 9)],
            "origin_kind": "automation",
            "origin_ref": "plan",
            "run_event": "run.claimed",
            "run_payload": {},
            "task_event": "task.in_progress",
            "task_payload": {},
            "claim_status": "claimed",
            "claim_started_at": None,
        }
        found = await (await driver(conn)).fetch("EXPLAIN " + compiled.sql, *compiled.args(params))
    return "\n".join(row[0] for row in found)


async def _keeper_passes(h: Harness, *, until: set[str]) -> set[str]:
    """The tables the statistics keeper analysed, pass after pass, until it has analysed ``until`` (or the
    time is up). PostgreSQL counts changes a moment after they commit; a later pass sees them."""
    analysed: set[str] = set()
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT
    while until - analysed and asyncio.get_running_loop().time() < deadline:
        analysed.update(await h.wl.ticker.keep_statistics())
        await asyncio.sleep(0.05)
    return analysed


@POSTGRES_ONLY
async def test_a_queue_filled_in_a_burst_is_analysed_and_claimed_down_the_claim_index(h: Harness) -> None:
    # Another queue's backlog, ahead in priority: a claim from "burst" must not wade through it.
    for _ in range(2):
        await h.do(lambda u: tasks.create_many(u, [NewTask(title="elsewhere", queue="other", priority="high")] * 1000))
    await h.do(lambda u: tasks.create_many(u, [NewTask(title="burst", queue="burst")] * 1000))

    analysed = await _keeper_passes(h, until={"runs", "tasks"})
    assert {"runs", "tasks"} <= analysed

    # With statistics the queue's runs are read in claim order from its own claim index, a few at a time.
    # Without, the planner went through the workspace-wide index, past the other queue's whole backlog (or
    # through the status index, sorting every queued run).
    plan = await _claim_plan(h, "burst")
    claiming = plan.split("CTE moved")[0]  # (its events are written in claim order: that sort is of a few rows)
    assert "Index Scan using ix_runs_claimable on runs" in claiming and "Sort" not in claiming, plan
    # So are they when completions that arrived together claim one run each (their rank is sorted, of
    # the few runs taken).
    plan = await _claim_plan(h, "burst", held.claim_each_statement(8))
    assert "Index Scan using ix_runs_claimable on runs" in plan and "ix_runs_claimable_any" not in plan, plan
    # Nothing has changed since: the next pass analyses nothing.
    assert await h.wl.ticker.keep_statistics() == []


@POSTGRES_ONLY
async def test_a_burst_of_queued_runs_too_small_to_move_the_table_is_analysed_before_claims_wade_through_it(
    h: Harness, migrated_url: str
) -> None:
    # A history of 10,000 finished tasks and runs, analysed (as autovacuum would) when none was queued: the
    # planner believes no run is queued. A burst of 1,500 is 15 % of the table: its size barely moves.
    history = await h.do(lambda u: queues.ensure(u, "history"))
    admin = await asyncpg.connect(migrated_url)
    try:
        for table in ("tasks", "runs"):
            await admin.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await admin.execute(_FINISHED_HISTORY, h.principal.workspace_id, history.id, 10_000)
        # Its counts reach the statistics now, not a second later on top of what the vacuum counts.
        await admin.execute("SELECT pg_stat_force_next_flush()")
        await admin.execute("VACUUM ANALYZE tasks, runs")
        await h.do(lambda u: tasks.create_many(u, [NewTask(title="burst", queue="burst")] * 1000))
        await h.do(lambda u: tasks.create_many(u, [NewTask(title="burst", queue="burst")] * 500))

        # The keeper sees that more runs are queued than the planner believes, and analyses them...
        analysed = await _keeper_passes(h, until={"runs"})
        assert "runs" in analysed

        # ...so a claim reads the queue's own claim index in order, a few entries, instead of every active
        # run of the workspace, sorted (the bench's `single` after its drain: PostgreSQL's CPU a claim
        # doubled, the queue filled on statistics taken when nothing was queued).
        plan = await _claim_plan(h, "burst")
        claiming = plan.split("CTE moved")[0]
        assert "Index Scan using ix_runs_claimable on runs" in claiming and "Sort" not in claiming, plan
        # What the planner believes now matches what is queued: the next pass analyses nothing.
        assert await h.wl.ticker.keep_statistics() == []
    finally:
        await admin.close()


# $1 workspace, $2 queue, $3 how many: finished tasks, each with its completed run (numbers far above the
# workspace's own, which the engine hands out).
_FINISHED_HISTORY = """
WITH t AS (
    INSERT INTO tasks (id, workspace_id, number, title, queue_id, priority, status, draft, approval_policy,
                       approval_state, created_by_kind, created_by_ref, origin_kind, origin_ref, created_at,
                       updated_at, closed_at, last_activity_at)
    SELECT 'task_history_' || g, $1, 1000000 + g, 'done', $2, 1, 'completed', false, 'none', 'none', 'human',
           'h', 'http', 'h', now(), now(), now(), now()
    FROM generate_series(1, $3::int) AS g
    RETURNING id
)
INSERT INTO runs (id, workspace_id, task_id, queue_id, attempt, status, priority, available_at, queued_at,
                  ended_at, end_reason)
SELECT 'run_' || substr(t.id, 6), $1, t.id, $2, 1, 'completed', 1, now(), now(), now(), 'completed' FROM t
"""


@POSTGRES_ONLY
async def test_the_statistics_keeper_analyses_only_the_columns_the_hot_plans_use_from_a_small_sample(
    h: Harness, migrated_url: str
) -> None:
    admin = await asyncpg.connect(migrated_url)
    try:
        # Autovacuum would analyse every column meanwhile, and hide what the keeper did.
        for table in ("tasks", "runs"):
            await admin.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for n in range(3):
            await h.do(lambda u, n=n: tasks.create_many(u, [NewTask(title="t", queue=f"q{n}")] * 700))  # type: ignore[misc]
        analysed = await _keeper_passes(h, until={"runs", "tasks"})
        assert {"runs", "tasks"} <= analysed

        found = await admin.fetch("SELECT tablename, attname FROM pg_stats WHERE tablename IN ('tasks', 'runs')")
        columns = {(row["tablename"], row["attname"]) for row in found}
        # The planner now knows the queues and statuses, and how many rows there are...
        assert {("tasks", "queue_id"), ("tasks", "status"), ("runs", "queue_id"), ("runs", "status")} <= columns
        assert await admin.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'tasks'") == 2100
        # ...and no time went on the titles, the JSON, the timestamps nobody filters on.
        assert not {("tasks", "title"), ("tasks", "data"), ("tasks", "created_at"), ("runs", "result")} & columns
        # Autovacuum's own full analysis still comes: the changes since the last one are still counted.
        changed = await admin.fetchval("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'tasks'")
        assert changed >= 2100
    finally:
        await admin.close()


@POSTGRES_ONLY
async def test_the_statistics_keeper_skips_a_table_a_vacuum_holds_instead_of_waiting_for_it(
    h: Harness, migrated_url: str
) -> None:
    await h.do(lambda u: tasks.create_many(u, [NewTask(title="stale", queue="held")] * 1000))
    await h.do(lambda u: tasks.create_many(u, [NewTask(title="stale", queue="held")] * 500))
    vacuum = await asyncpg.connect(migrated_url)  # holds what VACUUM holds on runs
    try:
        async with vacuum.transaction():
            await vacuum.execute("LOCK TABLE runs IN SHARE UPDATE EXCLUSIVE MODE")
            analysed: list[str] = []
            deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT
            while "tasks" not in analysed and asyncio.get_running_loop().time() < deadline:
                started = asyncio.get_running_loop().time()
                analysed += await h.wl.ticker.keep_statistics()
                assert asyncio.get_running_loop().time() - started < 5  # gave up on runs, did not wait
                await asyncio.sleep(0.05)
            assert analysed == ["tasks"]
        # Released: the next turn analyses it.
        assert await h.wl.ticker.keep_statistics() == ["runs"]
    finally:
        await vacuum.close()


@POSTGRES_ONLY
async def test_a_one_run_claim_runs_on_postgres_cached_plan_after_its_first_few(h: Harness) -> None:
    for _ in range(3):  # a queue deep enough that how the claim is planned matters
        await h.do(lambda u: tasks.create_many(u, [NewTask(title="one at a time", queue="loop")] * 1000))
    queue = await h.do(lambda u: queues.get(u, "loop"))
    claimer = Actor("automation", "plan")
    async with h.wl.db.transaction() as conn:  # one session: prepared statements are per connection
        await conn.execute(sa.text("ANALYZE runs"))
        for _ in range(8):
            spec = held.ClaimSpec(
                workspace_id=h.principal.workspace_id,
                queue_id=queue.id,
                queue_name="loop",
                now=h.clock.now(),
                limit=1,
                token_prefix="t",
                lease_until=h.clock.now() + timedelta(minutes=5),
                claimer=claimer,
                idempotency_key=None,
                task_status="in_progress",
                task_events=2,
                origin=claimer,
                run_event="run.claimed",
                run_payload={},
                task_event="task.in_progress",
                task_payload={},
            )
            claimed, _moved = await held.claim(conn, spec)
            assert len(claimed) == 1
        found = await (await driver(conn)).fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'WITH claimed AS%'"
        )
    # PostgreSQL plans a prepared statement for its parameters five times, then keeps the cached plan if it
    # costs no more; a claim whose limit was a parameter was planned afresh every time.
    assert found is not None and (found["custom_plans"], found["generic_plans"]) == (5, 3)


async def test_a_use_case_that_creates_then_reads_flushes_first_or_is_refused_whole(h: Harness) -> None:
    """A created task's rows wait for the end of the unit (to go in one statement with its events); a use
    case that goes on to use the database must flush them first. Forgetting is refused at once, on every
    backend and every run, and the refused unit leaves nothing behind."""
    await h.queue("inbox")

    async def forgets(u: Unit) -> Task:
        created = await tasks.create(u, NewTask(title="forgotten", queue="inbox"))
        return await tasks.get(u, created.id)

    with pytest.raises(RuntimeError, match="flush"):
        await h.do(forgets)
    assert (await h.list(ListQuery())).items == []

    async def flushes(u: Unit) -> Task:
        created = await tasks.create(u, NewTask(title="kept", queue="inbox"))
        await u.flush()
        return await tasks.get(u, created.id)

    found = await h.do(flushes)
    assert found.title == "kept" and found.status == "ready"
    assert [t.title for t in (await h.list(ListQuery())).items] == ["kept"]


@POSTGRES_ONLY
async def test_a_read_outside_a_unit_is_its_statements_alone_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await h.create("read about", queue="inbox")
    trips = RoundTrips(monkeypatch)

    trips.on = True
    last = await h.wl.events.last_sequence(h.principal)
    timeline = await h.wl.events.timeline(h.principal, task.id)
    trips.on = False

    assert trips.sent == ["SELECT", "SELECT", "SELECT"]  # no BEGIN, no ROLLBACK
    assert timeline[-1].sequence == last
    # The connection goes back to the pool as it came: the next unit of work is a transaction again.
    trips.sent.clear()
    trips.on = True
    await h.do(lambda u: tasks.cancel(u, task.id))
    trips.on = False
    assert trips.sent[0] == "BEGIN" and trips.sent[-1] == "COMMIT"


# -- rows written many at a time -----------------------------------------------------------------------------

AWKWARD = ['quote " and \\ backslash', "é ✓ 日本 — \n tab\t", "{not, an, array}", "NULL", ""]


async def created_as_given(h: Harness, given: list[NewTask]) -> list[Task]:
    """Create ``given`` in one batch; each task reads back as it was given (and as the create answered)."""
    made = await h.do(lambda u: tasks.create_many(u, given))
    for new, task in zip(given, made, strict=True):
        stored = await h.task(task.id)
        assert stored == task
        assert (stored.title, stored.data, stored.metadata, stored.description, stored.priority, stored.draft) == (
            new.title,
            new.data,
            new.metadata,
            new.description,
            new.priority,
            new.draft,
        )
    return made


async def test_a_batch_writes_every_value_as_one_at_a_time_would(h: Harness) -> None:
    # On PostgreSQL a batch's rows go as one JSON document: text that looks like JSON, arrays or NULL,
    # JSON nulls, numbers, flags and instants must all come back as they were given.
    given = [
        NewTask(title=AWKWARD[0], queue="bulk", data=None, metadata={"k": None}, priority="high"),
        NewTask(title=AWKWARD[1], queue="bulk", data={"texts": AWKWARD, "n": 2**53, "x": 1.5, "ok": False}),
        NewTask(title=AWKWARD[2], queue="bulk", data=[None, {"deep": [AWKWARD[3]]}], description=AWKWARD[4]),
        NewTask(title="drafted", queue="bulk", data="plain text", draft=True),
    ]
    await created_as_given(h, given)

    claims = await h.claim("bulk", limit=3)
    results: list[Any] = [None, {"echo": AWKWARD}, [1, None, "two"]]
    items = [(c.run.id, c.claim_token, r) for c, r in zip(claims, results, strict=True)]
    outcomes = await h.do(lambda u: runs.complete_many(u, items))
    assert [o.status for o in outcomes if isinstance(o, Run)] == ["completed"] * 3
    for claim, result in zip(claims, results, strict=True):
        task = await h.task(claim.task.id)
        assert (task.status, task.output, task.closed_at) == ("completed", result, h.clock.now())


# -- the owner index ---------------------------------------------------------------------------------------

OWNED_BY = (
    "SELECT id FROM tasks {hint} WHERE workspace_id = :ws AND owner_kind = :kind AND owner_ref = :ref "
    "AND status = 'ready'"
)
INDEX_PREDICATE = {
    "postgresql": "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
    "WHERE indexrelid = 'ix_tasks_workspace_owner'::regclass",
    "sqlite": "SELECT sql FROM sqlite_master WHERE name = 'ix_tasks_workspace_owner'",
}


async def test_the_owner_index_holds_owned_tasks_only_and_still_serves_a_list_by_owner(h: Harness) -> None:
    # Partial, so an unowned task's claim and completion write nothing to it; and a list by owner can
    # still use it, since an equality on the owner implies it is not NULL.
    ann = Actor("human", "ann")
    mine = [await h.create(f"mine {i}", queue="owned", owner=ann) for i in range(3)]
    for i in range(5):
        await h.create(f"nobody's {i}", queue="owned")
    params = {"ws": h.principal.workspace_id, "kind": "human", "ref": "ann"}
    async with h.wl.db.transaction() as conn:
        predicate = (await conn.execute(sa.text(INDEX_PREDICATE[conn.dialect.name]))).scalar_one()
        assert "owner_ref IS NOT NULL" in predicate
        if h.wl.db.is_postgres:
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            explained = await conn.execute(sa.text("EXPLAIN " + OWNED_BY.format(hint="")), params)
            plan = "\n".join(explained.scalars())
            assert "ix_tasks_workspace_owner" in plan, plan
        # SQLite refuses to prepare a query INDEXED BY an index that cannot serve it.
        hint = "" if h.wl.db.is_postgres else "INDEXED BY ix_tasks_workspace_owner"
        found = (await conn.execute(sa.text(OWNED_BY.format(hint=hint)), params)).scalars().all()
    assert sorted(found) == sorted(t.id for t in mine)


# -- a worker's loop over dependent tasks -------------------------------------------------------------------


async def test_a_completion_that_releases_a_dependent_claims_it_next_when_nothing_else_is_waiting(h: Harness) -> None:
    # Completing and claiming are one statement, which cannot see the dependent it releases: the claim is
    # then asked again, so a chain of tasks still runs without a wait between its links.
    first = await h.create("first", queue="chain")
    second = await h.create("second", queue="chain", depends_on=[first.id])
    claim = await h.claim_one("chain")
    assert claim.task.id == first.id

    done, claimed = await h.do(
        lambda u: runs.complete_and_claim(u, claim.run.id, claim.claim_token, {"ok": 1}, None, 1, None)
    )
    assert done.status == "completed"
    assert [c.task.id for c in claimed] == [second.id] and claimed[0].task.status == "in_progress"


async def test_a_completion_that_releases_a_dependent_and_claims_another_leaves_the_dependent_ready(
    h: Harness,
) -> None:
    first = await h.create("first", queue="chain")
    waiting = await h.create("waiting", queue="chain", depends_on=[first.id])
    other = await h.create("other", queue="chain")
    claim = await h.claim_one("chain")
    assert claim.task.id == first.id

    done, claimed = await h.do(
        lambda u: runs.complete_and_claim(u, claim.run.id, claim.claim_token, None, None, 1, None)
    )
    assert done.status == "completed" and [c.task.id for c in claimed] == [other.id]
    assert (await h.task(waiting.id)).status == "ready"
    assert (await h.task(first.id)).status == "completed"
    assert [c.task.id for c in await h.claim("chain")] == [waiting.id]


async def test_a_completion_with_nothing_left_to_claim_is_still_written(h: Harness) -> None:
    only = await h.create("only", queue="alone")
    claim = await h.claim_one("alone")
    done, claimed = await h.do(
        lambda u: runs.complete_and_claim(u, claim.run.id, claim.claim_token, {"n": 1}, None, 1, None)
    )
    assert (done.status, claimed) == ("completed", [])
    task = await h.task(only.id)
    assert (task.status, task.output, task.attempts) == ("completed", {"n": 1}, 1)
    assert [e.type for e in await h.wl.events.timeline(h.principal, only.id)][-2:] == [
        "run.completed",
        "task.completed",
    ]


@POSTGRES_ONLY
async def test_a_batch_updated_by_id_finds_its_rows_through_the_primary_key(h: Harness) -> None:
    # Thousands of runs and tasks the planner has no statistics for yet (as after a burst): joined to the
    # JSON rows alone, the update scanned both whole tables for every batch of completions.
    for _ in range(3):
        await h.do(lambda u: tasks.create_many(u, [NewTask(title="t", queue="scan") for _ in range(1000)]))
    claimed = await h.claim("scan", limit=16)
    rows = [
        {"run_id": c.run.id, "status": "completed", "result": None, "end_reason": "completed",
         "ended_at": h.clock.now(), "usage": None}
        for c in claimed
    ]  # fmt: skip
    write = run_store.run_complete_writes(rows)
    async with h.wl.db.transaction() as conn:
        sql, args = write.statement._pg(conn).shaped(write.rows) or ("", [])
        raw = await driver(conn)
        plan = "\n".join(r[0] for r in await raw.fetch("EXPLAIN (ANALYZE) " + sql, *args))
        await conn.rollback()
    assert "Seq Scan on runs" not in plan, plan
    assert "pk_runs" in plan, plan


async def test_a_claim_records_its_two_events_as_they_always_were(h: Harness) -> None:
    await h.create("earlier", queue="events")
    task = await h.create("claimed", queue="events", priority="urgent")
    worker = Actor("agent_session", "claimer-7")

    claim = await h.claim_one("events", worker=worker, lease_seconds=90)

    assert claim.task.id == task.id and claim.task.status == "in_progress"
    timeline = await h.timeline(task.id)
    claimed, in_progress = timeline[-2:]
    assert [e.task_sequence for e in timeline] == list(range(1, len(timeline) + 1))
    assert (claimed.type, in_progress.type) == ("run.claimed", "task.in_progress")
    assert claimed.payload == {
        "from_status": "queued",
        "status": "claimed",
        "attempt": 1,
        "lease_until": claim.lease_until.isoformat(),
    }
    assert in_progress.payload == {"from_status": "ready", "status": "in_progress"}
    for event in (claimed, in_progress):
        assert event.actor == worker and event.origin == h.principal.origin
        assert event.run_id == claim.run.id and event.created_at == h.clock.now()
    assert claimed.sequence < in_progress.sequence


@POSTGRES_ONLY
async def test_a_claim_is_one_statement_between_begin_and_commit_on_postgres(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = await counting_after_a_warm_queue(h, monkeypatch, "one")
    await h.claim("one", limit=2)  # the queue's id is cached once a claim has looked it up

    await h.create("third", queue="one")
    trips.on = True
    (claim,) = await h.claim("one")
    trips.on = False

    # The runs claimed, their tasks moved and both events of each written by the claiming statement.
    assert trips.sent == ["BEGIN", "WITH", "COMMIT"]
    assert (await h.event_types(claim.task.id))[-2:] == ["run.claimed", "task.in_progress"]


DEPENDS = Statement(sa.insert(task_dependencies))


def dependency_row(h: Harness, task: Task, on: Task) -> dict[str, Any]:
    """A row of ``task_dependencies``: ``task`` depends on ``on``."""
    return {
        "workspace_id": h.principal.workspace_id,
        "task_id": task.id,
        "depends_on_task_id": on.id,
        "kind": "blocks",
        "created_at": h.clock.now(),
    }


async def test_writes_sent_together_stop_at_the_first_that_fails_and_leave_nothing(h: Harness) -> None:
    # On SQLite the writes go to its thread in one hand-over: the failing one (a task depending on itself)
    # must still raise the error it raises alone, and the transaction leave nothing of the writes before it.
    first, second = await h.create("first"), await h.create("second")

    async def together(u: Unit) -> None:
        row = dependency_row
        writes = [
            Write(DEPENDS, [row(h, first, second), row(h, second, first)]),
            Write(DEPENDS, [row(h, first, first)]),
        ]
        await write_all(u.conn, writes)

    with pytest.raises(sa.exc.IntegrityError):
        await h.do(together)
    async with h.wl.db.read() as conn:
        left = (await conn.execute(sa.select(sa.func.count()).select_from(task_dependencies))).scalar_one()
    assert left == 0


@POSTGRES_ONLY
async def test_every_statement_of_the_hot_paths_is_prepared_once_per_connection(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement asyncpg does not keep (one longer than its cache's limit) is prepared again at every
    execution: a round trip and a parse and plan more. The longest are a create's, with its events."""
    prepared: dict[tuple[int, str], int] = {}
    get_statement = asyncpg.Connection._get_statement

    async def counted(self: asyncpg.Connection, query: str, timeout: float | None, **kwargs: Any) -> Any:
        record_class = kwargs.get("record_class") or self._protocol.get_record_class()
        if self._stmt_cache.get((query, record_class, kwargs.get("ignore_custom_codec", False))) is None:
            prepared[(id(self), query)] = prepared.get((id(self), query), 0) + 1
        return await get_statement(self, query, timeout, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "_get_statement", counted)
    for round_ in range(3):
        made = await h.create(f"t{round_}", queue="hot", data={"n": round_}, metadata={"m": 1}, priority="high")
        (claim,) = await h.claim("hot")
        assert claim.task.id == made.id
        await h.complete(claim, {"ok": True})

    again = {query[:80]: count for (_, query), count in prepared.items() if count > 1}
    assert prepared and not again, f"prepared more than once on one connection: {again}"
