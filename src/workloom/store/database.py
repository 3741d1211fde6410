"""Connecting to the database: URL normalisation, SQLite pragmas, and the one place that knows the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolResetState
from sqlalchemy.util import await_only

from workloom.store import fast
from workloom.store.fast import CommitUnknown

SQLITE_BUSY_SECONDS = 10  # how long a SQLite connection waits for another's lock before "database is locked"
# A read whose connection was lost under it runs again on another, at most this many times in all: more
# than one, since the connections PostgreSQL ended together are seen dead one by one.
READ_ATTEMPTS = 4
T = TypeVar("T")


def async_url(url: str) -> str:
    """Accept the URLs people write (``postgresql://``, ``sqlite:///``) and pick our async drivers."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:///path or postgresql://…")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The URL for a plain asyncpg connection (LISTEN/NOTIFY), without SQLAlchemy's driver suffix."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class KeptConnections:
    """PostgreSQL connections kept checked out of SQLAlchemy's pool between uses.

    Taking a connection from SQLAlchemy's pool and giving it back (its checkout, the connection object
    made around it, the reset on return) cost the server ~190 µs of CPU per transaction here, against
    ~60 µs for each round trip of the transaction itself: more than its BEGIN and COMMIT together, on
    every call that commits alone. A connection given back here after a clean use waits for the next as
    it is, among those set for transactions or those set for reads (autocommit), the most recently used
    taken first, so a lightly loaded server keeps to a few connections whose statements are prepared and
    planned. Every use of the engine goes through here, so a use of one kind takes an idle connection of
    the other before it waits for SQLAlchemy's pool, and while anyone waits there, a connection given
    back goes to the pool, which hands it on. A connection whose use raised (it may be broken, or mid-
    statement after a cancel) goes back to the pool, whose reset rolls it back or discards it; so does
    one kept longer than ``recycle`` seconds, for SQLAlchemy's recycling."""

    def __init__(self, engine: AsyncEngine, recycle: float) -> None:
        self._engine = engine
        self._recycle = recycle
        self._idle: dict[bool, list[tuple[AsyncConnection, float]]] = {False: [], True: []}
        self._waiting = 0
        self._closed = False

    async def take(self, *, autocommit: bool) -> tuple[AsyncConnection, float]:
        """A connection for a transaction, or with ``autocommit`` for reads, and when it was checked out.
        One whose session has ended (PostgreSQL restarted, an operator ended it) is let go, not handed out:
        asyncpg sees the server close it as soon as the loop runs, so no call has to fail to find out."""
        for kind in (autocommit, not autocommit):
            idle = self._idle[kind]
            while idle:
                conn, since = idle.pop()
                if await _let_go_if_dead(conn):
                    continue
                if kind != autocommit:
                    await conn.execution_options(isolation_level=self._level(autocommit))
                return conn, since
        while True:
            self._waiting += 1
            try:
                conn = await self._engine.connect()
            finally:
                self._waiting -= 1
            if not await _let_go_if_dead(conn):
                break
        if autocommit:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn, time.monotonic()

    async def give_back(self, conn: AsyncConnection, since: float, *, autocommit: bool, clean: bool) -> None:
        if await _let_go_if_dead(conn):
            return
        if (
            not clean
            or self._closed
            or self._waiting
            or conn.in_transaction()
            or time.monotonic() - since > self._recycle
        ):
            await conn.close()
            return
        self._idle[autocommit].append((conn, since))

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                conn, _ = idle.pop()
                await conn.close()

    def _level(self, autocommit: bool) -> str:
        return "AUTOCOMMIT" if autocommit else str(self._engine.dialect.default_isolation_level)


def _dead(conn: AsyncConnection) -> bool:
    """Whether ``conn``'s session is over: SQLAlchemy has invalidated it, or asyncpg has seen it close. The
    hot statements go to asyncpg directly (``fast``), so SQLAlchemy does not see every connection that
    died under them, and its pool would hand such a connection out again, call after call."""
    return conn.invalidated or fast.driver_closed(conn)


async def _let_go_if_dead(conn: AsyncConnection) -> bool:
    """Close ``conn`` (invalidated, so that the pool discards it) if its session is over; and say so."""
    if conn.closed:
        return True
    if not _dead(conn):
        return False
    if not conn.invalidated:
        await conn.invalidate()
    await conn.close()
    return True


class ConnectionLost(Exception):
    """The database connection died before its transaction's COMMIT was sent: nothing of the transaction
    committed (the server rolls back a transaction whose session ends), so it may simply run again. (Or
    under a read, which may always run again.)"""


@contextmanager
def _lost_if_dead(conn: AsyncConnection) -> Iterator[None]:
    """What the block raises as ``ConnectionLost`` if ``conn`` died under it, else as it is."""
    try:
        yield
    except CommitUnknown:
        raise  # the connection died too, but under the statement that was the commit: not safe to run again
    except Exception as exc:
        if _dead(conn):
            raise ConnectionLost("the database connection closed under the statement") from exc
        raise


@dataclass
class Database:
    """The async engine plus what the rest of the store needs to know about the backend."""

    engine: AsyncEngine
    url: str
    kept: KeptConnections | None = field(default=None, repr=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One unit of work, committed when the block ends and rolled back if it raises."""
        if self.kept is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        conn, since = await self.kept.take(autocommit=False)
        clean = committing = False
        try:
            async with conn.begin():
                with _lost_if_dead(conn):
                    yield conn
                    # Ended with its transaction begun but its COMMIT not yet sent: nothing of it committed, so
                    # it may run again. (A unit whose one statement went without BEGIN committed already.)
                    if _dead(conn) and fast.driver_began(conn):
                        await conn.invalidate()  # nothing to roll back on a session that is gone
                        raise ConnectionLost("the database connection closed before the transaction committed")
                committing = True
            clean = True
        except Exception as exc:
            if committing and _dead(conn):
                raise CommitUnknown("the database connection closed while the transaction was committing") from exc
            raise
        finally:
            await self.kept.give_back(conn, since, autocommit=False, clean=clean)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Reads outside any unit of work. On PostgreSQL they run without BEGIN and ROLLBACK: at READ
        COMMITTED every statement takes its own snapshot, in a transaction or not, so a transaction would
        give a read nothing but two more round trips."""
        if self.kept is None:
            async with self.engine.connect() as conn:
                yield conn
                await conn.rollback()
            return
        conn, since = await self.kept.take(autocommit=True)
        clean = False
        try:
            with _lost_if_dead(conn):
                yield conn
            await conn.rollback()
            clean = True
        finally:
            await self.kept.give_back(conn, since, autocommit=True, clean=clean)

    async def reading(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``read`` run on a connection of ``read()``, and run again on another if the one it had was lost
        under it (PostgreSQL restarted, or ended the session): a read changes nothing, so that is always
        safe. What reads on the engine's behalf goes through here."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                async with self.read() as conn:
                    return await read(conn)
            except ConnectionLost:
                if attempt == READ_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        if self.kept is not None:
            await self.kept.close()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: transactions are begun explicitly (BEGIN IMMEDIATE).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    _wal(cursor)
    # FULL: a commit survives power loss, not just a process crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal(cursor: Any) -> None:
    """Switch the file to WAL (kept in the file: later connections find it so). Switching takes the file's
    lock, and SQLite answers "database is locked" at once, without its busy handler, when another
    connection holds it — servers started together on a new file, a CLI command beside a server — so the
    switch is tried again for as long as the busy timeout would have waited."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, through SQLAlchemy's adapter
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        await_only(asyncio.sleep(0.02))  # connecting runs on the event loop (SQLAlchemy's greenlet): yield it


def _threaded(conn: sa.Connection) -> Any:
    """aiosqlite's connection under ``conn`` (SQLAlchemy's adapter wraps it)."""
    adapted: Any = conn.connection.dbapi_connection
    return adapted._connection


def _sqlite_begin(conn: sa.Connection) -> None:
    # BEGIN IMMEDIATE (the write lock taken up front, so two transactions never deadlock upgrading a read
    # lock) goes with the transaction's first statement (``fast.begin_pending``).
    fast.begin_pending(_threaded(conn))


def _sqlite_begin_first(conn: sa.Connection, cursor: Any, *_args: Any) -> None:
    # A statement through SQLAlchemy (the hot ones go through ``fast``) begins the transaction itself.
    if fast.begin_now(_threaded(conn)):
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except Exception:
            fast.begin_pending(_threaded(conn))  # nothing began: the next statement tries again
            raise


def _sqlite_commit(conn: sa.Connection) -> None:
    # Nothing is left to begin (a transaction that ran no statement never began in SQLite), and nothing
    # sent without waiting may be left unwaited (``fast.transaction_ended``).
    fast.transaction_ended(_threaded(conn), committed=True)


def _sqlite_rollback(conn: sa.Connection) -> None:
    fast.transaction_ended(_threaded(conn), committed=False)


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    # SQLAlchemy rolls back every connection taken back into the pool, even one whose unit has just
    # committed: on SQLite a hand-over to its thread each time, for nothing. Only an open transaction is.
    if state.terminate_only or not state.asyncio_safe:
        return  # being closed (or outside the event loop): nothing to keep clean for a next user
    raw = dbapi_connection._connection._connection  # aiosqlite's sqlite3 connection; None once closed
    if raw is not None and raw.in_transaction:
        dbapi_connection.rollback()


# JIT compiles only statements the planner thinks are costly; for this workload that is asyncpg's type
# introspection on a fresh connection, which JIT turns from 2 ms into 30 ms, and nothing it speeds up.
SERVER_SETTINGS = {"jit": "off"}
RECYCLE_SECONDS = 1800
# asyncpg prepares a statement longer than its cache's limit (15 KiB) afresh at every execution: a round
# trip, and a parse and plan on PostgreSQL. A create with its events is one statement of ~15 KiB (every
# column of a task, a run and an event), so one more column would have crossed the limit unseen.
CACHEABLE_STATEMENT_BYTES = 256 * 1024


def connect(url: str, *, pool_size: int = 20) -> Database:
    full = async_url(url)
    if full.startswith("sqlite"):
        # One connection: SQLite has one writer, and queueing writers in-process is cheaper than
        # having them spin on the file lock.
        engine = create_async_engine(
            full,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            json_serializer=_json_text,
            json_deserializer=_json_value,
            pool_reset_on_return=None,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        event.listen(engine.sync_engine, "before_cursor_execute", _sqlite_begin_first)
        event.listen(engine.sync_engine, "commit", _sqlite_commit)
        event.listen(engine.sync_engine, "rollback", _sqlite_rollback)
        event.listen(engine.sync_engine.pool, "reset", _sqlite_reset)
    else:
        # A fixed pool, no overflow: a connection opened for a burst and closed after it costs more (the
        # connect, and every statement prepared again on it) than waiting a moment for a pooled one.
        engine = create_async_engine(
            full,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=30,
            pool_pre_ping=False,
            pool_recycle=RECYCLE_SECONDS,
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
            connect_args={
                "server_settings": SERVER_SETTINGS,
                "max_cacheable_statement_size": CACHEABLE_STATEMENT_BYTES,
            },
        )
        return Database(engine=engine, url=url, kept=KeptConnections(engine, recycle=RECYCLE_SECONDS))
    return Database(engine=engine, url=url)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_value(text: Any) -> Any:
    # SQLite hands a JSON column's scalar back as a number when SQL computed it; SQLAlchemy's reader
    # returns that as it is on TypeError, which the standard library raises there and orjson does not.
    if not isinstance(text, str | bytes):
        raise TypeError(f"not JSON text: {type(text).__name__}")
    return orjson.loads(text)


# A hand-off's answer refused: its claimer's idempotency key was in use or answered (migration 0006).
KEY_BUSY = "WLK01"
# serialization_failure, deadlock_detected, and a hand-off to run again without that claimer
_TRANSIENT_SQLSTATES = {"40001", "40P01", KEY_BUSY}


def is_transient(exc: BaseException) -> bool:
    """Whether a failed transaction may simply be run again (deadlock, serialization failure, busy file, a
    connection lost before the commit was sent, a hand-off refused under a busy key)."""
    if isinstance(exc, ConnectionLost):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if sqlstate(exc) in _TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)


def is_key_busy(exc: BaseException) -> bool:
    """Whether a transaction failed because a hand-off it made to a claimer waiting under an idempotency key
    may not store that claimer's answer (``Handoffs``): run again, it must not hand that claimer anything."""
    cause: BaseException | None = exc
    while cause is not None:  # through what wrapped it (a shared commit's rollback)
        if isinstance(cause, sa.exc.DBAPIError) and sqlstate(cause) == KEY_BUSY:
            return True
        cause = cause.__cause__
    return False


def sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    """PostgreSQL's error code for a failed statement (None elsewhere), however the driver wrapped it."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return str(code) if code is not None else None
