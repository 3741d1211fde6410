"""PostgreSQL connections kept between uses (``store.database.KeptConnections``): a connection is kept only
after a clean use, every use of the engine shares the whole pool, and stopping closes them all."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from harness import Harness
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.clock import ManualClock
from workloom.domain.errors import NotFound, OutcomeUnknown
from workloom.domain.models import Event
from workloom.domain.queries import ListQuery
from workloom.engine import tasks
from workloom.engine.service import Workloom
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey, Unit
from workloom.store import events as event_store
from workloom.store import fast
from workloom.store.database import plain_url
from workloom.store.numbers import RESERVE


@pytest.fixture
def pg_url(postgres_server: Any) -> Any:
    name = postgres_server.create(template=postgres_server.migrated_template())
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop_later(name)


@contextlib.asynccontextmanager
async def engine(url: str, pool_size: int) -> AsyncIterator[Harness]:
    clock = ManualClock()
    wl = Workloom.from_url(url, clock, pool_size=pool_size)
    try:
        yield await Harness.open(wl, clock)
    finally:
        await wl.stop()


async def _sessions(url: str, state: str | None = None) -> int:
    """Server sessions on this database other than the one asking (``state``: only those in it)."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND ($1::text IS NULL OR state = $1)",
            state,
        )
        return count
    finally:
        await conn.close()


async def _cut_every_session(url: str) -> None:
    """End every other session on the database, and wait until the server has: none of them is left."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        cut = await conn.fetchval(
            "WITH others AS MATERIALIZED (SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid())"
            " SELECT array_agg(pid) FROM others WHERE pg_terminate_backend(pid)"
        )
        assert cut and len(cut) >= 2
        async with asyncio.timeout(10):
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", cut):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the server's view of the ended sessions, polled
    finally:
        await conn.close()


async def test_no_call_fails_after_the_database_ended_every_session(pg_url: str) -> None:
    """PostgreSQL restarted, or an operator ended the sessions: the connections they leave dead are let go
    when next taken (asyncpg has seen the server close them), and the calls run on new ones."""
    async with engine(pg_url, pool_size=4) as h:
        for n in range(6):
            await asyncio.gather(h.create(f"before {n}"), h.create(f"beside {n}"))
        async with h.wl.db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
        await _cut_every_session(pg_url)
        for n in range(10):
            assert (await h.create(f"after {n}")).title == f"after {n}"
            async with h.wl.db.read() as conn:
                assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1


async def test_a_call_whose_connection_dies_before_its_commit_runs_again_on_another(pg_url: str) -> None:
    """The connection dies between two statements of a call (a network cut the loop has not yet seen):
    nothing of that attempt committed, so the call runs again, once, on a new connection."""
    async with engine(pg_url, pool_size=2) as h:
        attempts = 0

        async def create_after_losing_the_first_connection(u: Unit) -> Any:
            nonlocal attempts
            attempts += 1
            first = await tasks.create(u, NewTask(title=f"attempt {attempts}", queue="q"))
            await u.flush()
            if attempts == 1:
                pid = (await u.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
                killer = await asyncpg.connect(plain_url(pg_url))
                try:
                    await killer.execute("SELECT pg_terminate_backend($1)", pid)
                finally:
                    await killer.close()
                await u.conn.execute(sa.text("SELECT 1"))
            return first

        task = await h.do(create_after_losing_the_first_connection)
        assert attempts == 2
        assert task.title == "attempt 2"
        titles = [t.title for t in (await h.list(ListQuery(limit=100))).items]
        assert titles == ["attempt 2"]


async def _end_and_see_ended(pg_url: str, u: Unit) -> None:
    """End the session under the unit's connection, and wait until asyncpg has read that it ended (as it
    does when the loop turns while the call awaits something else), sending nothing on it."""
    raw = await fast.driver(u.conn, begin=False)
    killer = await asyncpg.connect(plain_url(pg_url))
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", raw.get_server_pid())
    finally:
        await killer.close()
    async with asyncio.timeout(10):
        while not raw.is_closed():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # asyncpg reading the server's goodbye, polled


@pytest.mark.parametrize("begun", [False, True], ids=["its-one-statement-unsent", "its-commit-unsent"])
async def test_a_call_whose_connection_ended_before_it_sent_its_commit_runs_again(pg_url: str, begun: bool) -> None:
    """The server ended the session while the call awaited something else, and asyncpg saw it before the
    call sent what would commit it: a create's one statement (sent without BEGIN, which commits itself), or
    the COMMIT of a transaction whose statements ran. Nothing of it committed, so it runs again on another
    connection — it used to be answered "outcome unknown" (found by the database-restart API test under
    load)."""
    async with engine(pg_url, pool_size=2) as h:
        for n in range(2):  # the queue made, and known to the cache: a create is then its one statement
            await h.create(f"before {n}", queue="q")
        attempts = 0

        async def create_losing_the_first_connection(u: Unit) -> Any:
            nonlocal attempts
            attempts += 1
            if begun:
                await u.conn.execute(sa.text("SELECT 1"))  # BEGIN goes with it
            elif attempts == 1:
                await _end_and_see_ended(pg_url, u)  # before the create's one statement is built
            made = await tasks.create(u, NewTask(title=f"attempt {attempts}", queue="q"))
            if begun:
                await u.flush()
                if attempts == 1:
                    await _end_and_see_ended(pg_url, u)  # its statements ran; its COMMIT is still to go
            return made

        task = await h.wl.run(h.principal, create_losing_the_first_connection, shared=True)  # as a create is run

        assert attempts == 2
        assert task.title == "attempt 2"
        titles = {t.title for t in (await h.list(ListQuery(limit=100))).items}
        assert titles == {"before 0", "before 1", "attempt 2"}


async def test_a_read_whose_connection_dies_under_it_runs_again_on_another(pg_url: str) -> None:
    """The same cut under a read (authenticating a key, a task's timeline, an event stream's next batch):
    the read runs again on a new connection, where before the caller got the dead connection's error."""
    async with engine(pg_url, pool_size=2) as h:
        task = await h.create("read after a cut")
        attempts = 0

        async def timeline_after_losing_the_first_connection(conn: AsyncConnection) -> list[Event]:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
                killer = await asyncpg.connect(plain_url(pg_url))
                try:
                    await killer.execute("SELECT pg_terminate_backend($1)", pid)
                finally:
                    await killer.close()
            return await event_store.event_list_for_task(conn, task.workspace_id, task.id)

        events = await h.wl.db.reading(timeline_after_losing_the_first_connection)
        assert attempts == 2
        assert [e.type for e in events][:1] == ["task.created"]


def _end_unseen(url: str, last_query: str) -> None:
    """End the sessions whose last statement was ``last_query`` while this thread's event loop is blocked
    (the cut is made from another thread, joined), so the engine on it cannot have seen them end."""

    async def cut() -> None:
        conn = await asyncpg.connect(plain_url(url))
        try:
            ended = await conn.fetchval(
                "WITH chosen AS MATERIALIZED (SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND query = $1 AND pid <> pg_backend_pid())"
                " SELECT array_agg(pid) FROM chosen WHERE pg_terminate_backend(pid)",
                last_query,
            )
            assert ended, f"no session had run {last_query!r}"
            async with asyncio.timeout(10):
                while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", ended):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()

    failed: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(failed, lambda: asyncio.run(cut())))
    thread.start()
    thread.join()
    assert not failed, failed


def _capture(failed: list[BaseException], run: Any) -> None:
    try:
        run()
    except BaseException as exc:  # handed to the test's thread
        failed.append(exc)


async def test_a_create_whose_number_reservation_lost_its_connection_unseen_reserves_again(pg_url: str) -> None:
    """Task numbers are reserved on connections of their own; one that died unseen (the loop had not run
    since) made the create fail with a 500. Now the reservation is made again on a new connection."""
    async with engine(pg_url, pool_size=2) as h:
        first = await h.create("before the cut")
        _end_unseen(pg_url, RESERVE)
        second = await h.create("after the cut")
        assert second.number is not None and first.number is not None
        assert second.number > first.number


async def test_a_call_cancelled_inside_a_statement_commits_nothing_and_leaves_no_transaction_open(
    pg_url: str,
) -> None:
    async with engine(pg_url, pool_size=2) as h:
        inside = asyncio.Event()

        async def create_then_hang(u: Unit) -> None:
            await tasks.create(u, NewTask(title="never committed", queue="q"))
            await u.flush()
            inside.set()
            await u.conn.execute(sa.text("SELECT pg_sleep(30)"))

        call = asyncio.ensure_future(h.do(create_then_hang))
        await inside.wait()
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        for n in range(6):  # more calls than connections: each of them is used again
            task = await h.create(f"after {n}", queue="q")
            assert (await h.task(task.id)).title == f"after {n}"
        titles = [t.title for t in (await h.list(ListQuery(limit=100))).items]
        assert "never committed" not in titles
        async with asyncio.timeout(10):
            while await _sessions(pg_url, "idle in transaction"):  # noqa: ASYNC110 (the server's view, polled)
                await asyncio.sleep(0.02)


async def test_reads_and_transactions_share_the_whole_pool(pg_url: str) -> None:
    """Connections waiting between transactions serve reads, and the other way round; a use that waits for
    a connection gets the next one given back, not the pool's timeout half a minute later."""
    async with engine(pg_url, pool_size=2) as h:
        db = h.wl.db
        async with db.transaction() as a, db.transaction() as b:
            await a.execute(sa.text("SELECT 1"))
            await b.execute(sa.text("SELECT 1"))
        async with asyncio.timeout(5):
            async with db.read() as a, db.read() as b:
                assert (await a.execute(sa.text("SELECT 1"))).scalar() == 1
                assert (await b.execute(sa.text("SELECT 1"))).scalar() == 1
            async with db.transaction() as a, db.transaction() as b:
                await a.execute(sa.text("SELECT 1"))
                await b.execute(sa.text("SELECT 1"))

        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with db.transaction() as conn:
                await conn.execute(sa.text("SELECT 1"))
                held.set()
                await release.wait()

        holders = [asyncio.ensure_future(hold()), asyncio.ensure_future(hold())]
        async with asyncio.timeout(5):
            while not held.is_set():  # noqa: ASYNC110 (the first holder's connection taken)
                await asyncio.sleep(0.005)
            waiting = asyncio.ensure_future(h.create("waits for a connection"))
            await asyncio.sleep(0)  # the create asks the pool before the holders give their connections back
            release.set()
            await asyncio.gather(*holders)
            task = await waiting
        assert (await h.task(task.id)).title == "waits for a connection"


async def test_stopping_the_engine_closes_every_connection_it_kept(pg_url: str) -> None:
    async with engine(pg_url, pool_size=4) as h:
        await asyncio.gather(*(h.create(f"task {n}") for n in range(8)))
        async with h.wl.db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
        assert await _sessions(pg_url) >= 1
    async with asyncio.timeout(10):
        while await _sessions(pg_url):  # noqa: ASYNC110 (the server's view of the closed sessions, polled)
            await asyncio.sleep(0.02)


async def test_a_read_that_raised_is_not_kept_half_done(pg_url: str) -> None:
    """A read cut short by an error leaves nothing behind for the next use of its connection."""
    async with engine(pg_url, pool_size=1) as h:
        with pytest.raises(NotFound):
            await h.task("tsk_does_not_exist")
        async with h.wl.db.read() as conn:
            with pytest.raises(sa.exc.DBAPIError):
                await conn.execute(sa.text("SELECT 1/0"))
        async with h.wl.db.read() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
        assert (await h.create("after the error")).title == "after the error"


class CommitsCut:
    """The connection of the next ``armed`` commits dies as it commits — its COMMIT, or its one statement
    sent without BEGIN: ``after`` the server made the transaction durable (its answer lost on the way
    back), or before the commit reached it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, after: bool) -> None:
        self.armed = 0
        self.after = after
        commit, execute = asyncpg.transaction.Transaction.commit, asyncpg.connection.Connection.execute

        async def cut_commit(transaction: Any) -> None:
            await self._cut(transaction._connection, commit(transaction))

        async def cut_execute(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if conn.is_in_transaction() or not query.startswith(("WITH", "INSERT")):
                return await execute(conn, query, *args, **kwargs)
            return await self._cut(conn, execute(conn, query, *args, **kwargs))

        monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", cut_commit)
        monkeypatch.setattr(asyncpg.connection.Connection, "execute", cut_execute)

    async def _cut(self, conn: Any, committing: Any) -> Any:
        if not self.armed:
            return await committing
        self.armed -= 1
        if self.after:
            await committing
        else:
            committing.close()
        conn.terminate()
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")


def _keyed_create(h: Harness, key: str, title: str) -> Any:
    return h.wl.respond(
        h.principal,
        lambda u: tasks.create(u, NewTask(title=title)),
        lambda task: (201, {"id": task.id, "title": task.title}),
        IdempotencyKey(key, f"POST /v1/tasks {title}".encode()),
        shared=True,
    )


async def _titles(h: Harness) -> list[str]:
    return sorted(t.title for t in (await h.list(ListQuery(limit=100))).items)


async def test_calls_whose_commit_lost_its_answer_are_told_so_and_not_run_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their commit may have been made durable before the connection died (it was, here): run again, each
    would be done twice. A group of calls sharing the commit used to be run again one by one."""
    cut = CommitsCut(monkeypatch, after=True)
    async with engine(pg_url, pool_size=4) as h:
        alone = h.wl.run(h.principal, lambda u: tasks.create(u, NewTask(title="alone")))
        cut.armed = 1
        with pytest.raises(OutcomeUnknown, match="may or may not have been saved"):
            await alone
        cut.armed = 1
        told = await asyncio.gather(
            *(h.wl.run(h.principal, lambda u, n=n: tasks.create(u, NewTask(title=f"shared {n}")), shared=True)
              for n in range(3)),
            return_exceptions=True,
        )  # fmt: skip
        assert [type(e) for e in told] == [OutcomeUnknown] * 3
        assert h.wl.runner.shared is not None and h.wl.runner.shared.grouped == 0  # one group, not committed as such

        assert await _titles(h) == ["alone", "shared 0", "shared 1", "shared 2"]  # each once
        assert (await h.create("after")).title == "after"  # and the pool went on


@pytest.mark.parametrize("after", [True, False], ids=["committed", "not-committed"])
async def test_keyed_calls_whose_commit_outcome_is_unknown_are_done_once_and_answered(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    """Under an idempotency key the engine runs the call again: it gives back the answer stored with the
    commit that was made, or does the call if it was not."""
    cut = CommitsCut(monkeypatch, after=after)
    async with engine(pg_url, pool_size=4) as h:
        cut.armed = 1
        alone = await _keyed_create(h, "k-alone", "alone")
        cut.armed = 1
        shared = await asyncio.gather(*(_keyed_create(h, f"k-{n}", f"shared {n}") for n in range(3)))

        assert cut.armed == 0
        assert await _titles(h) == ["alone", "shared 0", "shared 1", "shared 2"]
        assert [body["title"] for _, body in [alone, *shared]] == ["alone", "shared 0", "shared 1", "shared 2"]
        assert await _keyed_create(h, "k-alone", "alone") == alone  # the answer kept is the one given
