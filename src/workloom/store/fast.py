"""The hot statements, built once and run straight through the driver.

Building a SQLAlchemy statement, finding its compiled form and adapting its result costs far more than
the database takes to run it (measured on a claim's candidate query: 1.6 ms of Python through
SQLAlchemy, 0.3 ms through asyncpg). A ``Statement`` is built once per dialect, compiled once, and
executed with the driver on the same connection and transaction SQLAlchemy holds: on PostgreSQL with
asyncpg (and its own prepared statements), on SQLite with one call into aiosqlite's thread (SQLAlchemy's
adapter makes four: cursor, execute, fetch, close; and a drain spent a fifth of the server in its bind
processing). The bind and result conversions are still SQLAlchemy's (taken from the compiled form), so
values look exactly as they do through ``conn.execute``.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import re
import sqlite3
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from operator import attrgetter, itemgetter
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

Processor = Callable[[Any], Any] | None
Build = Callable[[str], Executable]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]  # values of parameters the statement carries itself (literals in where clauses)
    binds: tuple[Processor, ...]
    columns: tuple[tuple[str, Processor], ...]
    bulk: _Bulk | None = None
    _keys: tuple[str, ...] = field(init=False)
    _processed: tuple[tuple[str, Callable[[Any], Any]], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", tuple(key for key, _ in self.columns))
        object.__setattr__(self, "_processed", tuple((k, p) for k, p in self.columns if p is not None))

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = params[name] if name in params else self.fixed[name]
            out.append(process(value) if process is not None and value is not None else value)
        return out

    def args_each(self, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        """``args`` of each item, for a statement run once per item (SQLite's ``executemany``): every item's
        values picked in C by the names, then only those with a conversion converted. Per item through
        ``args``, this took a sixth of a batch completion's server time on SQLite."""
        names = self.names
        if not names or not all(name in params[0] for name in names):
            return [self.args(p) for p in params]  # some value is the statement's own: the general way
        pick = itemgetter(*names)
        try:
            table = [list(pick(p)) for p in params] if len(names) > 1 else [[pick(p)] for p in params]
        except KeyError:  # an item without some value the first has
            return [self.args(p) for p in params]
        steps = [(j, process) for j, process in enumerate(self.binds) if process is not None]
        for row in table:
            for j, process in steps:
                value = row[j]
                if value is not None:
                    row[j] = process(value)
        return table

    def bulk_args(self, bulk: _Bulk, params: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
        """``bulk``'s text for these rows and its arguments: the rows as one JSON document (an array of arrays:
        the row-varying parameters of each row, JSON columns' values as they are, others through their bind
        conversions), then the constants, then the values every row has alike (``_Bulk.form``)."""
        names = [self.names[i] for i in bulk.per_row]
        pick = itemgetter(*names)  # a row's values in C (a row-varying parameter is in every row)
        picked = [pick(p) for p in params] if len(names) > 1 else [(pick(p),) for p in params]
        hoisted: tuple[int, ...] = ()
        if len(picked) >= HOIST_FROM:
            hoisted = tuple(n for n, column in enumerate(zip(*picked, strict=True)) if _alike(column))
            if len(hoisted) == len(names):
                hoisted = hoisted[1:]  # the document has a value per row, which sets the number of rows
        hoisted, sql = bulk.form(hoisted)
        binds = self.binds
        varying = [n for n in range(len(names)) if n not in hoisted] if hoisted else range(len(names))
        steps = [
            (col, process)
            for col, n in enumerate(varying)
            if not bulk.raw[n] and (process := binds[bulk.per_row[n]]) is not None
        ]
        if hoisted:
            take = itemgetter(*varying)
            picked = [take(row) for row in picked] if len(varying) > 1 else [(take(row),) for row in picked]
        table = []
        for values in picked:
            row = list(values)
            for col, process in steps:
                value = row[col]
                if value is not None:
                    row[col] = process(value)
            table.append(row)
        # Then each value sent once: the statement's constants, and the values every row has alike.
        once = [(self.fixed[self.names[i]], binds[i]) for i in bulk.scalar]
        once += [(params[0][names[n]], binds[bulk.per_row[n]]) for n in hoisted]
        out: list[Any] = [orjson.dumps(table).decode()]
        out += [process(value) if process is not None and value is not None else value for value, process in once]
        return sql, out

    def shaped(self, params: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]] | None:
        """The statement run once per item of ``params`` as one statement, and its arguments: itself for one
        item, its set-based form for more; None where it has none (or an item sets one of its constants)."""
        if len(params) == 1:
            return self.sql, self.args(params[0])
        bulk = self.bulk
        if bulk is not None and not any(self.names[i] in params[0] for i in bulk.scalar):
            return self.bulk_args(bulk, params)
        return None

    def row(self, record: Sequence[Any]) -> dict[str, Any]:
        # Most columns come as the driver gives them: zip those in C, then convert the few that need it.
        found = dict(zip(self._keys, record, strict=True))
        for key, process in self._processed:
            value = found[key]
            if value is not None:
                found[key] = process(value)
        return found


def _result_processor(type_: Any, dialect: Dialect) -> Processor:
    """SQLAlchemy's conversion of a result column, as its result would apply it. A numeric type's, on
    asyncpg, depends on the column's type in the answer, which is not known before a statement runs; asyncpg
    gives ``float8`` as a float and ``numeric`` as a Decimal already, which is what SQLAlchemy's gives for a
    ``Float`` and a ``Numeric`` column (the schema has no column whose type and declaration disagree), so such
    a column needs none."""
    if dialect.driver == "asyncpg" and isinstance(type_, (sa.Numeric, sa.Float)):
        return None
    processor: Processor = type_._cached_result_processor(dialect, None)
    return processor


def _compile(stmt: Executable, dialect: Dialect) -> _Compiled:
    element: Any = stmt
    compiled: Any = element.compile(dialect=dialect)
    if compiled.post_compile_params:
        raise ValueError("a fast statement cannot have expanding parameters; use = ANY(:array) on PostgreSQL")
    # Constants marked literal_execute (``schema.inline``) are written into the text once, here.
    fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
    expanded = compiled.construct_expanded_state({name: fixed.get(name) for name in compiled.positiontup or ()})
    names = tuple(expanded.positiontup or ())
    bind_processors = compiled._bind_processors
    columns = tuple((column[0], _result_processor(column[3], dialect)) for column in compiled._result_columns)
    if dialect.name == "sqlite":
        bulk = _lite_bulk(expanded.statement, names, fixed)
    else:
        bulk = _bulk(expanded.statement, names, fixed, compiled, dialect)
    return _Compiled(expanded.statement, names, fixed, tuple(bind_processors.get(n) for n in names), columns, bulk)


@dataclass(frozen=True, slots=True)
class _Bulk:
    """A statement run once per row rewritten as one statement over the rows: ``INSERT … SELECT … FROM`` or
    ``UPDATE … FROM … WHERE`` the elements of one JSON array parameter. The database then plans and executes
    it once, not once per row. One JSON document rather than an array per column: asyncpg checks every
    element of an array parameter against three abstract base classes, which took more of the server's
    time in a batch create than building the rows did; orjson writes the document in C.

    A value every row has alike (a batch's status, its instants, its workspace) is sent once, as a parameter
    of its own, rather than in every row (``form``): PostgreSQL then neither parses it out of each row nor
    converts it from text each time (a timestamp's parse is the dearest): a part of a batch create, 250
    tasks with their runs and events, 20.0 → 16.4 ms of PostgreSQL here."""

    template: str  # the statement, "\x00n\x00" where the n-th row-varying parameter goes
    per_row: tuple[int, ...]  # positions (into the statement's parameters) that vary by row
    raw: tuple[bool, ...]  # per ``per_row``: a JSON column, whose value goes into the document as it is
    scalar: tuple[int, ...]  # positions that stay one value for every row (constants the statement carries)
    casts: tuple[str, ...]  # per ``per_row``: its placeholder's cast (PostgreSQL; none on SQLite)
    postgres: bool
    # The texts with some values sent once, by which (``form``); the one with every value in every row.
    forms: dict[tuple[int, ...], str] = field(default_factory=dict, compare=False)
    every_row: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "every_row", self._render(()))

    def form(self, hoisted: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        """The statement's text with the row-varying parameters ``hoisted`` (positions into ``per_row``) sent
        once, numbered after the constants, the others read from each row of the document in their order;
        and which were hoisted. Once the statement has ``MOST_FORMS`` such texts (each is a prepared
        statement per connection), rows that fit none of them send every value in every row."""
        if not hoisted:
            return hoisted, self.every_row
        found = self.forms.get(hoisted)
        if found is None:
            if len(self.forms) >= MOST_FORMS:
                return (), self.every_row
            found = self.forms[hoisted] = self._render(hoisted)
        return hoisted, found

    def _render(self, hoisted: tuple[int, ...]) -> str:
        first_hoisted = 2 + len(self.scalar)
        numbered = {n: first_hoisted + k for k, n in enumerate(hoisted)}
        sql = self.template
        element = 0
        for n, (raw, cast) in enumerate(zip(self.raw, self.casts, strict=True)):
            if n in numbered:
                value = f"${numbered[n]}{cast}" if self.postgres else f"?{numbered[n]}"
            elif not self.postgres:
                value = f"json_extract(u.value, '$[{element}]')"
            elif raw:  # a JSON null is SQL NULL, as None is through the driver
                value = f"NULLIF(u.r->{element}, 'null'::jsonb){cast}"
            else:  # ->> gives an element as text for its cast
                value = f"(u.r->>{element}){cast}"
            element += n not in numbered
            sql = sql.replace(f"\x00{n}\x00", value)
        if self.postgres and sql.startswith("UPDATE "):
            sql += _by_key(sql.split(" WHERE ", 1)[1])
        return sql


# From this many rows, values every row has alike are sent once (``_Bulk.form``): below it the few rows
# save little, and each combination of columns alike is one more statement text to prepare.
HOIST_FROM = 16
# The most texts one statement's set-based form takes (which columns are alike depends on the rows); past
# it, rows not fitting one of them send every value in every row.
MOST_FORMS = 8
_PLAIN = frozenset({str, int, bool, decimal.Decimal})
_ZONE = attrgetter("tzinfo")


def _alike(column: tuple[Any, ...]) -> bool:
    """Whether every row's value of a column is the same value, to be written the same way."""
    first = column[0]
    if column.count(first) != len(column):
        return False
    if first is None:
        return True
    kind = type(first)
    if kind in _PLAIN:
        return len(set(map(type, column))) == 1  # ``True == 1`` and ``1 == 1.0``: the same type too
    if kind is datetime.datetime:  # one instant is equal to itself in another time zone, not written alike
        return len(set(map(type, column))) == 1 and len(set(map(_ZONE, column))) == 1
    return len(set(map(orjson.dumps, column))) == 1  # JSON, where {"a": 1} == {"a": True}: alike as written


_JSON_CASTS = {"::JSONB", "::JSON"}


def _bulk(sql: str, names: tuple[str, ...], fixed: dict[str, Any], compiled: Any, dialect: Dialect) -> _Bulk | None:
    """The set-based form of ``sql``, or None where the statement has a shape it does not know."""
    casts: list[str] = []
    for name in names:
        bind_type = compiled.binds[name].type
        impl = bind_type._unwrapped_dialect_impl(dialect)
        if not impl.render_bind_cast:
            return None
        casts.append(compiled.render_bind_cast(bind_type, impl, ""))
    per_row = tuple(i for i, name in enumerate(names) if name not in fixed)
    scalar = tuple(i for i, name in enumerate(names) if name in fixed)
    if any(casts[i].endswith("]") for i in per_row):
        return None  # an array per row has no plain JSON element form
    # Placeholders first, so that renumbering $1 never touches $10.
    for i in reversed(range(len(names))):
        token = f"${i + 1}{casts[i]}"
        if token not in sql:
            return None
        sql = sql.replace(token, f"\x01{i}\x01")
    element = {i: n for n, i in enumerate(per_row)}
    for i in per_row:
        sql = sql.replace(f"\x01{i}\x01", f"\x00{element[i]}\x00")
    for n, i in enumerate(scalar, start=2):
        sql = sql.replace(f"\x01{i}\x01", f"${n}{casts[i]}")
    raw = tuple(casts[i].upper() in _JSON_CASTS for i in per_row)
    template = _over_rows(sql, "jsonb_array_elements($1::JSONB) AS u(r)", "")
    if template is None:
        return None
    return _Bulk(template, per_row, raw, scalar, tuple(casts[i] for i in per_row), postgres=True)


def _lite_bulk(sql: str, names: tuple[str, ...], fixed: dict[str, Any]) -> _Bulk | None:
    """SQLite's set-based form of ``sql`` (as ``_bulk``'s): ``INSERT … SELECT`` or ``UPDATE … FROM`` the
    elements of ``json_each(?1)``, constants numbered after it. One statement is one call into SQLite,
    which runs all of its rows without the GIL: a statement run once per row (``executemany``) gives the
    GIL back and takes it again for every row, and while the event loop's thread runs Python each taking
    waits for it, so that none of SQLite's work overlaps the loop's."""
    pieces = sql.split("?")
    if sqlite3.sqlite_version_info < (3, 33) or len(pieces) != len(names) + 1:
        return None  # UPDATE … FROM is 3.33's; a "?" in the text that is no parameter
    per_row = tuple(i for i, name in enumerate(names) if name not in fixed)
    scalar = tuple(i for i, name in enumerate(names) if name in fixed)
    element = {i: n for n, i in enumerate(per_row)}
    numbered = {i: n for n, i in enumerate(scalar, start=2)}
    parts = [pieces[0]]
    for i, piece in enumerate(pieces[1:]):
        parts.append(f"\x00{element[i]}\x00" if i in element else f"?{numbered[i]}")
        parts.append(piece)
    # in the array's order, as one insert per row would
    template = _over_rows("".join(parts), "json_each(?1) AS u", " ORDER BY u.key")
    if template is None:
        return None
    return _Bulk(template, per_row, (False,) * len(per_row), scalar, ("",) * len(per_row), postgres=False)


def _over_rows(sql: str, source: str, insert_order: str) -> str | None:
    """An ``INSERT … VALUES`` as ``INSERT … SELECT … FROM source``, an ``UPDATE … WHERE`` as ``UPDATE …
    FROM source WHERE``; None for any other statement. A batch returns nothing."""
    if sql.startswith("INSERT INTO ") and sql.count(" VALUES (") == 1:
        head, values = sql.split(" VALUES (")
        if ") RETURNING " in values:
            values = values.split(") RETURNING ")[0] + ")"
        if values.endswith(")"):
            return f"{head} SELECT {values[:-1]} FROM {source}{insert_order}"
    if sql.startswith("UPDATE ") and sql.count(" WHERE ") == 1 and " RETURNING " not in sql:
        head, where = sql.split(" WHERE ")
        return f"{head} FROM {source} WHERE {where}"
    return None


_KEY = re.compile(r"\b(\w+)\.id = (\(u\.r->>\d+\)::[A-Z]+(?:\(\d+\))?)")


def _by_key(where: str) -> str:
    """For an update of rows by id: the ids again, as an array computed once, so that the rows are found
    through the primary key. Joined to the JSON rows alone, PostgreSQL (which takes any set-returning
    function to return 100 rows) hash-joined them to a scan of the whole table: 16 completions scanned
    every run and every task, 6 ms with 4,000 of each."""
    found = _KEY.search(where)
    if found is None:
        return ""
    table, key = found.groups()
    ids = key.replace("u.r", "k.r")
    return f" AND {table}.id = ANY(ARRAY(SELECT {ids} FROM jsonb_array_elements($1::JSONB) AS k(r)))"


def _driver_error(error: asyncpg.PostgresError | sqlite3.Error, sql: str) -> sa.exc.DBAPIError:
    """What SQLAlchemy would have raised, so callers catch ``IntegrityError`` and retry transient ones alike."""
    integrity = isinstance(error, asyncpg.IntegrityConstraintViolationError | sqlite3.IntegrityError)
    kind = sa.exc.IntegrityError if integrity else sa.exc.DBAPIError
    return kind(sql, None, error)


def _sqlite_run(
    connection: sqlite3.Connection, sql: str, args: Sequence[Any] | list[Sequence[Any]], many: bool
) -> tuple[list[Any], int]:
    # Runs on aiosqlite's thread: the statement, its rows and its count in one hand-over.
    cursor = connection.executemany(sql, args) if many else connection.execute(sql, args)
    try:
        return (cursor.fetchall() if cursor.description else []), cursor.rowcount
    finally:
        cursor.close()


# A statement for SQLite's thread: its text, its arguments, whether they are one set per row, and how
# many rows it must change (None: any number).
_LiteRun = tuple[str, Any, bool, int | None]


def _sqlite_run_all(
    connection: sqlite3.Connection, runs: list[_LiteRun]
) -> tuple[tuple[list[Any], int], tuple[int, sqlite3.Error] | None]:
    # Runs on aiosqlite's thread: the statements in order, in one hand-over; the last one's rows and count,
    # or the position and error of the one that failed (raised on the loop's side, naming its statement).
    if not connection.in_transaction and not runs[0][0].startswith("BEGIN"):
        # SQLite rolled the whole transaction back when an earlier statement failed (a full disk, say):
        # run nothing more, each would commit on its own. A statement sent without waiting may follow one
        # that failed so, before the caller has seen that failure.
        return ([], -1), (0, sqlite3.OperationalError("the transaction was rolled back before this statement"))
    found: tuple[list[Any], int] = ([], -1)
    for position, (sql, args, many, changes) in enumerate(runs):
        try:
            found = _sqlite_run(connection, sql, args, many)
        except sqlite3.Error as error:
            return ([], -1), (position, error)
        if changes is not None and found[1] != changes:
            # Rows read earlier in this transaction, under its write lock, were to be changed: they were not.
            return ([], -1), (position, _Unchanged(f"{changes} rows were to change, {found[1]} did"))
    return found, None


class _Unchanged(sqlite3.DatabaseError):
    """A write sent without waiting changed other rows than the reads it was built from said it would."""


# A unit's BEGIN IMMEDIATE goes to SQLite's thread with the unit's first statement, in its hand-over,
# rather than on its own when the unit begins (through SQLAlchemy's adapter: three hand-overs). Each
# hand-over lets the event loop run whatever else is ready before the unit goes on (a previous request's
# answer sent, the next request read), and the one connection is held all that while: in a drain, ~2 ms
# of a 20 ms unit between taking the connection and beginning. The connections whose transaction has
# begun for SQLAlchemy but not yet in SQLite (``begin_pending``, set by the store's engine events).
_BEGIN: _LiteRun = ("BEGIN IMMEDIATE", (), False, None)
_begin_pending: weakref.WeakSet[Any] = weakref.WeakSet()


def begin_pending(threaded: Any) -> None:
    """``threaded`` (aiosqlite's connection) is to begin its transaction with its first statement."""
    _begin_pending.add(threaded)


def begin_now(threaded: Any) -> bool:
    """Whether ``threaded`` still had to begin its transaction; from here on, the caller begins it."""
    if threaded in _begin_pending:
        _begin_pending.discard(threaded)
        return True
    return False


def _begun(threaded: Any, runs: list[_LiteRun]) -> tuple[list[_LiteRun], bool]:
    """``runs``, after BEGIN IMMEDIATE where the transaction has not begun in SQLite yet."""
    if begin_now(threaded):
        return [_BEGIN, *runs], True
    return runs, False


def _refused(threaded: Any, runs: list[_LiteRun], began: bool, failed: tuple[int, sqlite3.Error]) -> Exception:
    """The error to raise for the statement of ``runs`` that failed (``failed``: its position and error)."""
    position, error = failed
    if began and position == 0:
        begin_pending(threaded)  # nothing began: the next statement tries again
    refused = _driver_error(error, runs[position][0])
    refused.__cause__ = error
    return refused


async def on_sqlite_thread(
    adapted: Any, sql: str, args: Sequence[Any] | list[Sequence[Any]] = (), *, many: bool = False
) -> tuple[list[Any], int]:
    """Run ``sql`` on the SQLite connection SQLAlchemy's adapter ``adapted`` wraps, in one hand-over to its
    thread (after BEGIN IMMEDIATE, where its transaction is still to begin): its rows and the count of rows
    it changed."""
    threaded = adapted._connection  # aiosqlite's Connection: one queue to its thread
    runs, began = _begun(threaded, [(sql, args, many, None)])
    outcome: tuple[tuple[list[Any], int], tuple[int, sqlite3.Error] | None]
    outcome = await threaded._execute(_sqlite_run_all, threaded._conn, runs)
    found, failed = outcome
    if failed is not None:
        raise _refused(threaded, runs, began, failed)
    return found


def _adapted(conn: AsyncConnection) -> Any:
    adapted: Any = conn.sync_connection.connection.dbapi_connection if conn.sync_connection else None
    if adapted is None:
        raise RuntimeError("no connection")
    return adapted


async def _on_sqlite(conn: AsyncConnection, sql: str, args: Any, *, many: bool = False) -> tuple[list[Any], int]:
    """Run ``sql`` inside the transaction ``conn`` holds."""
    return await on_sqlite_thread(_adapted(conn), sql, args, many=many)


class SentWrites:
    """Statements handed to SQLite's thread in one hand-over (``_send``), not waited for yet: whoever sent
    them awaits ``done()``, or the unit's end does (``sent_all``), before its transaction commits."""

    def __init__(
        self,
        outcome: asyncio.Future[tuple[tuple[list[Any], int], tuple[int, sqlite3.Error] | None]],
        runs: list[_LiteRun],
        threaded: Any,
        began: bool,
    ) -> None:
        self._outcome = outcome
        self._runs = runs
        self._threaded = threaded
        self._began = began

    async def done(self) -> list[Any]:
        """Wait for them: the last one's rows; raises what the first of them that failed raised."""
        try:
            (found, _), failed = await self._outcome
        finally:
            unwaited = _unwaited.get(self._threaded)
            if unwaited is not None and self in unwaited:
                unwaited.remove(self)
        if failed is not None:
            raise _refused(self._threaded, self._runs, self._began, failed)
        return found


# Per connection (aiosqlite's), what was sent to its thread and not waited for yet, oldest first.
_unwaited: weakref.WeakKeyDictionary[Any, list[SentWrites]] = weakref.WeakKeyDictionary()


async def sent_all(conn: AsyncConnection) -> None:
    """Wait for everything sent on ``conn``'s transaction without waiting (SQLite), in the order sent;
    raises what the first that failed raised. A unit's end calls it before it commits."""
    if conn.dialect.name == "postgresql":
        return
    unwaited = _unwaited.get(_adapted(conn)._connection)
    while unwaited:
        await unwaited[0].done()


def transaction_ended(threaded: Any, *, committed: bool) -> None:
    """The transaction on ``threaded`` (aiosqlite's connection) ends: nothing is left to begin, and what was
    sent and not waited for is forgotten. A commit with some of it unwaited is refused: its failure, if it
    failed, would go unnoticed and the transaction commit without it."""
    begin_now(threaded)
    unwaited = _unwaited.pop(threaded, None)
    if committed and unwaited:
        raise RuntimeError("statements sent without waiting were not waited for before commit (fast.sent_all)")


def _send(conn: AsyncConnection, runs: list[_LiteRun]) -> SentWrites:
    """Hand statements to SQLite's thread, to run in order inside the transaction ``conn`` holds, in one
    hand-over (each costs the loop a wake-up and the thread a switch). What aiosqlite's ``_execute`` does
    before it waits (SQLAlchemy's adapter does the same): the call onto the queue its thread takes from."""
    threaded = _adapted(conn)._connection
    if not threaded._running or threaded._connection is None:
        raise ValueError("Connection closed")  # as aiosqlite says it
    runs, began = _begun(threaded, runs)
    outcome: asyncio.Future[tuple[tuple[list[Any], int], tuple[int, sqlite3.Error] | None]]
    outcome = asyncio.get_running_loop().create_future()
    threaded._tx.put_nowait((outcome, partial(_sqlite_run_all, threaded._conn, runs)))
    sent = SentWrites(outcome, runs, threaded, began)
    _unwaited.setdefault(threaded, []).append(sent)
    return sent


class SentRead:
    """A read handed to SQLite's thread (``read_soon``), its rows to be taken with ``rows()``."""

    def __init__(self, sent: SentWrites, compiled: _Compiled) -> None:
        self._sent = sent
        self._compiled = compiled

    async def rows(self) -> list[dict[str, Any]]:
        return [self._compiled.row(record) for record in await self._sent.done()]


def read_soon(conn: AsyncConnection, statement: Statement, params: Mapping[str, Any]) -> SentRead | None:
    """On SQLite, hand ``statement`` to its thread now and go on: it reads what the transaction holds when
    its turn comes (after whatever was sent before it). None where it cannot be sent so (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return None
    lite = statement._lite(conn)
    if lite is None:
        return None
    return SentRead(_send(conn, [(lite.sql, lite.args(params), False, None)]), lite)


def write_all_soon(conn: AsyncConnection, writes: Sequence[Write]) -> SentWrites | None:
    """On SQLite, hand the writes to its thread now without waiting for them: the caller goes on with work
    that needs nothing from them while SQLite runs them (its thread releases the GIL while it steps each
    row), and must await ``done()`` before it commits. Whatever is sent after them runs after them. None
    where the writes cannot be sent so: on PostgreSQL (its writes go in one statement with what follows
    them), or where one has no driver form."""
    writes = [w for w in writes if w.rows]
    if conn.dialect.name == "postgresql" or not writes:
        return None
    runs = _lite_runs(conn, writes)
    return _send(conn, runs) if runs is not None else None


def _lite_runs(conn: AsyncConnection, writes: Sequence[Write]) -> list[_LiteRun] | None:
    """Each write as statements for SQLite's thread; None where some write has no driver form."""
    runs: list[_LiteRun] = []
    for write in writes:
        lite = write.statement._lite(conn)
        if lite is None:
            return None
        runs.append(_lite_many(lite, write.rows, write.changes))
    return runs


# From this many rows a statement run once per row goes to SQLite in its set-based form (``_lite_bulk``).
# Alone it is no faster: each row's values are read out of its JSON text, and below ~50 rows that costs
# more than binding them (100 rows: 1.43 ms against 1.52; 8 rows: 0.18 against 0.14). What it gains is a
# statement SQLite runs without the GIL, which the event loop's Python can run beside.
MANY_AS_ONE_FROM = 64


def _lite_many(lite: _Compiled, rows: Sequence[Mapping[str, Any]], changes: int | None = None) -> _LiteRun:
    """``lite`` once per row of ``rows`` as a statement for SQLite's thread: its set-based form for many rows
    where it has one and they fit it (JSON's values), else run once per row."""
    if len(rows) >= MANY_AS_ONE_FROM and lite.bulk is not None:
        try:
            shaped = lite.shaped(rows)
        except TypeError:  # a value JSON has no form for (bytes)
            shaped = None
        if shaped is not None:
            return (shaped[0], shaped[1], False, changes)
    if len(rows) == 1:
        return (lite.sql, lite.args(rows[0]), False, changes)
    return (lite.sql, lite.args_each(rows), True, changes)


async def driver(conn: AsyncConnection, *, begin: bool = True) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside the transaction SQLAlchemy has begun on it.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a statement sent around
    it must begin that transaction first, or it would run (and commit) on its own — which is what
    ``begin=False`` is for: the one statement of a transaction that has no other (nothing has begun it,
    and SQLAlchemy's COMMIT then finds nothing to commit).
    """
    adapted = _adapted(conn)
    if begin and adapted._transaction is None and adapted.isolation_level != "autocommit":
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()
    raw: asyncpg.Connection = adapted._connection
    return raw


def driver_began(conn: AsyncConnection) -> bool:
    """Whether a transaction was begun (BEGIN sent) on the asyncpg connection under ``conn`` and not yet
    ended: false for a unit whose one statement went without BEGIN and so committed itself."""
    if conn.closed or conn.sync_connection is None:
        return False
    return getattr(_adapted(conn), "_transaction", None) is not None


def driver_closed(conn: AsyncConnection) -> bool:
    """Whether the asyncpg connection under ``conn`` has closed (its session ended by the server): what
    SQLAlchemy does not see when the statement that met it went to asyncpg directly."""
    if conn.closed or conn.invalidated or conn.sync_connection is None:
        return False
    raw: Any = getattr(_adapted(conn), "_connection", None)
    return raw is not None and bool(raw.is_closed())


def one_of(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (:name…)`` with one statement text whatever the length: an array parameter on PostgreSQL,
    a JSON array read by ``json_each`` on SQLite (whose planner still looks each value up by index). The
    values must be JSON's own: text or numbers."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
    listed = sa.func.json_each(sa.bindparam(name, type_=sa.JSON())).table_valued("value")
    return column.in_(sa.select(listed.c.value))


def workspace_filter(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """``column = :name`` for rows already found by primary key (``id = ANY(:ids)``), written so that no
    index can serve it. Before a fresh table has statistics the planner takes a workspace to hold a handful
    of rows and scans the whole workspace through a workspace index to pick out the ids (5 ms for 50 tasks
    of 2,000, growing with the workspace); as a plain filter the rows are always found by their key."""
    return column.op("||")(sa.literal_column("''")) == sa.bindparam(name, type_=column.type)


def _constant(stmt: Executable) -> Build:
    return lambda _dialect: stmt


BuildFor = Callable[[str, tuple[str, ...]], Executable]


def _with_columns(build: BuildFor, key: tuple[str, ...], dialect: str) -> Executable:
    return build(dialect, key)


class Statement:
    """One statement (``build(dialect_name)`` may differ per dialect), compiled once per dialect."""

    def __init__(self, build: Build | Executable) -> None:
        self._build: Build = build if callable(build) else _constant(build)
        self._built: dict[str, Executable] = {}
        self._compiled: _Compiled | None = None
        self._sqlite: _Compiled | bool | None = False  # False: not compiled yet; None: no driver form

    def statement(self, dialect_name: str) -> Executable:
        stmt = self._built.get(dialect_name)
        if stmt is None:
            stmt = self._built[dialect_name] = self._build(dialect_name)
        return stmt

    def _pg(self, conn: AsyncConnection) -> _Compiled:
        if self._compiled is None:
            self._compiled = _compile(self.statement("postgresql"), conn.dialect)
        return self._compiled

    def _lite(self, conn: AsyncConnection) -> _Compiled | None:
        """The SQLite form, when this connection may take it: inside a transaction (outside one, SQLAlchemy
        would begin it), and for a statement without expanding parameters (``IN`` lists: their text varies
        with the length, which SQLAlchemy renders per call)."""
        if not conn.in_transaction():
            return None
        if self._sqlite is False:
            try:
                self._sqlite = _compile(self.statement("sqlite"), conn.dialect)
            except ValueError:
                self._sqlite = None
        assert not isinstance(self._sqlite, bool)
        return self._sqlite

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        params = params or {}
        if conn.dialect.name != "postgresql":
            lite = self._lite(conn)
            if lite is None:
                result = await conn.execute(self.statement(conn.dialect.name), dict(params))
                return [dict(row) for row in result.mappings()]
            found, _ = await _on_sqlite(conn, lite.sql, lite.args(params))
            return [lite.row(row) for row in found]
        compiled = self._pg(conn)
        raw = await driver(conn)
        try:
            records = await raw.fetch(compiled.sql, *compiled.args(params))
        except asyncpg.PostgresError as error:
            raise _driver_error(error, compiled.sql) from error
        return [compiled.row(record) for record in records]

    async def first(self, conn: AsyncConnection, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        found = await self.rows(conn, params)
        return found[0] if found else None

    async def execute(self, conn: AsyncConnection, params: Mapping[str, Any] | None = None) -> int:
        """Run it; the number of rows it changed."""
        params = params or {}
        if conn.dialect.name != "postgresql":
            lite = self._lite(conn)
            if lite is None:
                result = await conn.execute(self.statement(conn.dialect.name), dict(params))
                return int(result.rowcount)
            _, count = await _on_sqlite(conn, lite.sql, lite.args(params))
            return count
        compiled = self._pg(conn)
        raw = await driver(conn)
        try:
            status = await raw.execute(compiled.sql, *compiled.args(params))
        except asyncpg.PostgresError as error:
            raise _driver_error(error, compiled.sql) from error
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def many(self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per item of ``params``: on PostgreSQL as one statement over arrays where it can be
        rewritten so (an UPDATE must then touch a different row for each item), else in one round trip."""
        if not params:
            return
        if conn.dialect.name != "postgresql":
            lite = self._lite(conn)
            if lite is None:
                await conn.execute(self.statement(conn.dialect.name), [dict(p) for p in params])
            else:
                sql, args, many, _ = _lite_many(lite, params)
                await _on_sqlite(conn, sql, args, many=many)
            return
        compiled = self._pg(conn)
        raw = await driver(conn)
        shaped = compiled.shaped(params)  # asyncpg's executemany costs several times a plain execute
        try:
            if shaped is not None:
                await raw.execute(shaped[0], *shaped[1])
            else:
                await raw.executemany(compiled.sql, [compiled.args(p) for p in params])
        except asyncpg.PostgresError as error:
            raise _driver_error(error, compiled.sql) from error


@dataclass(frozen=True, slots=True)
class Write:
    """A statement to run once per row (as ``Statement.many``), to be sent together with others."""

    statement: Statement
    rows: Sequence[Mapping[str, Any]]
    # How many rows it must change, all rows together, where that is known (rows read earlier in the
    # transaction): checked on SQLite, where a write sent without waiting fails at the unit's end if not.
    changes: int | None = None


_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def _renumbered(sql: str, offset: int) -> str:
    """``sql`` with its parameters ``$n`` moved up by ``offset`` (it follows that many others). Cached: the
    same few statements follow each other in the same order, write after write."""
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


class CommitUnknown(Exception):
    """The database connection died while its transaction was committing — its COMMIT on the way, or its
    one statement sent without BEGIN running: the transaction may have committed or not (the server may
    have made it durable and lost the session before answering), so running it again could do it twice."""


async def write_all(conn: AsyncConnection, writes: Sequence[Write], *, final: bool = False) -> None:
    """Run the writes in order; on PostgreSQL in one round trip, as one statement in which each write but
    the last is a data-modifying ``WITH`` part. Foreign keys are checked when that statement ends, so a
    write may refer to rows an earlier one inserts. Writes with no one-statement form are run one by one.

    ``final``: nothing else runs in this transaction. If nothing ran before either, the statement is sent
    without BEGIN (and so needs no COMMIT): one statement is a transaction of its own."""
    writes = [w for w in writes if w.rows]
    if not writes:
        return
    if conn.dialect.name != "postgresql":
        runs = _lite_runs(conn, writes)
        if runs is not None:
            await _send(conn, runs).done()
            return
    parts = _parts(conn, writes)
    if parts is None or (len(writes) < 2 and not final):
        for write in writes:
            await write.statement.many(conn, write.rows)
        return
    sql, args = parts
    text = _joined(sql)
    raw = await driver(conn, begin=not final)
    alone = not raw.is_in_transaction()  # sent without BEGIN: this statement commits itself
    # A connection the server ended while this call awaited something else (asyncpg has read its end) is
    # refused before anything is sent: nothing ran, so the call may run again on another (``ConnectionLost``).
    sent = not raw.is_closed()
    try:
        await raw.execute(text, *args)
    except Exception as error:
        if alone and sent and raw.is_closed():
            raise CommitUnknown(
                "the database connection closed under the statement that was its transaction"
            ) from error
        if isinstance(error, asyncpg.PostgresError):
            raise _driver_error(error, text) from error
        raise


async def rows_after(
    conn: AsyncConnection, writes: Sequence[Write], statement: Statement, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Run the writes, then ``statement``, and return its rows: on PostgreSQL one statement, the writes its
    data-modifying ``WITH`` parts. ``statement`` reads the snapshot the statement began with, so it does not
    see what the writes change (its rows must not depend on them)."""
    writes = [w for w in writes if w.rows]
    if conn.dialect.name != "postgresql":
        runs = _lite_runs(conn, writes)
        lite = statement._lite(conn)
        if runs is not None and lite is not None:
            found = await _send(conn, [*runs, (lite.sql, lite.args(params), False, None)]).done()
            return [lite.row(row) for row in found]
    parts = _parts(conn, writes)
    if parts is None or not writes:
        for write in writes:
            await write.statement.many(conn, write.rows)
        return await statement.rows(conn, params)
    sql, args = parts
    compiled = statement._pg(conn)
    sql.append(_renumbered(compiled.sql, len(args)))
    args.extend(compiled.args(params))
    text = _joined(sql)
    raw = await driver(conn)
    try:
        records = await raw.fetch(text, *args)
    except asyncpg.PostgresError as error:
        raise _driver_error(error, text) from error
    return [compiled.row(record) for record in records]


def _parts(conn: AsyncConnection, writes: list[Write]) -> tuple[list[str], list[Any]] | None:
    """Each write's one-statement form with its parameters numbered after the previous ones' (PostgreSQL);
    None where some write has none, or elsewhere."""
    if conn.dialect.name != "postgresql":
        return None
    shaped = [w.statement._pg(conn).shaped(w.rows) for w in writes]
    if any(s is None for s in shaped):
        return None
    parts: list[str] = []
    args: list[Any] = []
    for sql, values in (s for s in shaped if s is not None):
        parts.append(_renumbered(sql, len(args)))
        args.extend(values)
    return parts, args


def _joined(parts: list[str]) -> str:
    """Statements as one: each but the last a ``WITH`` part of the last (whose own ``WITH`` parts, if it has
    any, follow them: PostgreSQL allows data-modifying ``WITH`` parts only at the top level)."""
    if len(parts) == 1:
        return parts[0]
    writes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts[:-1]))
    last = parts[-1]
    for opening in ("WITH RECURSIVE ", "WITH "):
        if last.startswith(opening):
            return f"{opening}{writes}, {last[len(opening) :]}"
    return f"WITH {writes} {last}"


class Statements:
    """Statements that vary only by which columns they set: one ``Statement`` per set of column names."""

    def __init__(self, build: BuildFor) -> None:
        self._build = build
        self._by_columns: dict[tuple[str, ...], Statement] = {}

    def for_columns(self, columns: Iterable[str]) -> Statement:
        key = tuple(sorted(columns))
        found = self._by_columns.get(key)
        if found is None:
            found = self._by_columns[key] = Statement(partial(_with_columns, self._build, key))
        return found


class ById:
    """``UPDATE <table> SET <values> WHERE id = :id [AND status = / IN :expected]``, one statement per set of
    columns (``many``: ``WHERE id IN :ids … RETURNING id``)."""

    def __init__(self, table: sa.Table, *, many: bool = False) -> None:
        self._table = table
        self._many = many
        self._statements = Statements(self._build)

    def _build(self, dialect: str, names: tuple[str, ...]) -> Executable:
        table = self._table
        values = {n: sa.bindparam(f"v_{n}", type_=table.c[n].type) for n in names if not n.startswith("_")}
        stmt = sa.update(table).values(values)
        if self._many:
            stmt = stmt.where(one_of(table.c.id, "_ids", dialect)).returning(table.c.id)
        else:
            stmt = stmt.where(table.c.id == sa.bindparam("_id"))
        if "_expected" in names:
            stmt = stmt.where(table.c.status == sa.bindparam("_expected", type_=table.c.status.type))
        elif "_expected_any" in names:
            stmt = stmt.where(one_of(table.c.status, "_expected_any", dialect))
        return stmt

    def _statement(
        self, values: Mapping[str, Any], expected: str | tuple[str, ...] | None
    ) -> tuple[Statement, dict[str, Any]]:
        params = {f"v_{name}": value for name, value in values.items()}
        if isinstance(expected, str):
            params["_expected"] = expected
        elif expected is not None:
            params["_expected_any"] = list(expected)
        return self._statements.for_columns([*values, *(k for k in params if k.startswith("_"))]), params

    async def execute(
        self, conn: AsyncConnection, id: str, values: Mapping[str, Any], expected: str | tuple[str, ...] | None = None
    ) -> int:
        """Rows changed (0 or 1)."""
        statement, params = self._statement(values, expected)
        return await statement.execute(conn, {**params, "_id": id})

    async def execute_many(
        self, conn: AsyncConnection, ids: list[str], values: Mapping[str, Any], expected: str | tuple[str, ...] | None
    ) -> set[str]:
        """The ids changed."""
        statement, params = self._statement(values, expected)
        return {row["id"] for row in await statement.rows(conn, {**params, "_ids": ids})}
