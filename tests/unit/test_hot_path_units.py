"""Pieces of the hot paths that need no database: NOTIFY payloads, SSE encodings kept per app, the queue cache,
instants as SQLite stores them."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from workloom.api.routers.events import EncodedEvents
from workloom.domain.actors import Actor
from workloom.domain.models import Event, Queue, changed
from workloom.engine.caches import QueueCache
from workloom.engine.signals import queues_changed_key
from workloom.store.fast import _compile, _Compiled
from workloom.store.notify import payloads
from workloom.store.types import UtcDateTime

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; ours stay under 7000.
LIMIT = 7000


def _keys_of(sent: list[str]) -> list[str]:
    return [key for payload in sent for key in payload.split(" ")]


# -- 5. NOTIFY payloads ---------------------------------------------------------------------------------


def test_a_small_key_set_is_one_payload() -> None:
    keys = {"queue:q_1", "work:ws_1", "events:ws_1"}
    sent = payloads(keys)
    assert len(sent) == 1
    assert sorted(_keys_of(sent)) == sorted(keys)


def test_no_keys_send_nothing() -> None:
    assert payloads(set()) == []


@pytest.mark.parametrize("key_length", [9, 26, 61, 99, 100, 700])
def test_a_large_key_set_is_split_into_payloads_under_the_limit_carrying_each_key_once(key_length: int) -> None:
    keys = {f"k{i:06d}".ljust(key_length, "x") for i in range(50_000 // key_length * 3)}
    sent = payloads(keys)
    assert len(sent) > 1
    assert all(len(payload.encode()) < LIMIT for payload in sent)
    carried = _keys_of(sent)
    assert sorted(carried) == sorted(keys)  # every key, none twice, none mangled


# -- 6. SSE encodings kept per app ----------------------------------------------------------------------


def _event(sequence: int, kind: str = "task.created", title: str = "t") -> Event:
    return Event(
        sequence=sequence,
        workspace_id="ws_1",
        task_id="task_1",
        run_id=None,
        task_sequence=sequence,
        type=kind,
        actor=Actor("user", "ada"),
        origin=None,
        payload={"title": title},
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_an_event_is_encoded_once_and_sent_as_the_same_bytes() -> None:
    encoded = EncodedEvents()
    first = encoded.message(_event(7))
    assert first.startswith(b"id: 7\nevent: task.created\ndata: ")
    assert first.endswith(b"\n\n")
    assert b'"title":"t"' in first
    # Another stream sending the same event (a separate copy read from the database) gets the same object.
    assert encoded.message(_event(7)) is first


def test_distinct_events_have_distinct_encodings() -> None:
    encoded = EncodedEvents()
    seven = encoded.message(_event(7, "task.created", "a"))
    eight = encoded.message(_event(8, "task.ready", "b"))
    assert seven != eight
    assert eight.startswith(b"id: 8\nevent: task.ready\ndata: ")
    assert b'"title":"b"' in eight
    assert encoded.message(_event(7, "task.created", "a")) is seven
    assert encoded.message(_event(8, "task.ready", "b")) is eight


def test_only_the_most_recent_encodings_are_kept() -> None:
    encoded = EncodedEvents(size=3)
    kept = {sequence: encoded.message(_event(sequence)) for sequence in range(1, 6)}
    # The three newest are still the objects first made ...
    for sequence in (3, 4, 5):
        assert encoded.message(_event(sequence)) is kept[sequence]
    # ... the two oldest were dropped: encoded again, to equal bytes.
    for sequence in (1, 2):
        again = encoded.message(_event(sequence))
        assert again == kept[sequence]
        assert again is not kept[sequence]


# -- the queue cache ------------------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(workspace_id: str, name: str, lease_seconds: int = 300) -> Queue:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return Queue(
        id=f"q_{workspace_id}_{name}",
        workspace_id=workspace_id,
        name=name,
        description=None,
        lease_seconds=lease_seconds,
        max_attempts=3,
        initial_interval_seconds=1.0,
        backoff_coefficient=2.0,
        max_interval_seconds=300.0,
        start_mode="auto",
        created_at=now,
        updated_at=now,
    )


def test_a_cached_queue_expires_after_its_time_to_live() -> None:
    monotonic = FakeMonotonic()
    cache = QueueCache(ttl=10.0, monotonic=monotonic)
    cache.put(_queue("ws_a", "q"))
    monotonic.now += 9.99
    hit = cache.get("ws_a", "q")
    assert hit is not None and hit.name == "q"
    monotonic.now += 0.01
    assert cache.get("ws_a", "q") is None


def test_a_queue_change_drops_only_its_workspace_s_queues() -> None:
    cache = QueueCache(monotonic=FakeMonotonic())
    for workspace in ("ws_a", "ws_b"):
        for name in ("q1", "q2"):
            cache.put(_queue(workspace, name))
    cache.on_keys(["queue:q_ws_a_q1", "work:ws_a", queues_changed_key("ws_a")])
    assert cache.get("ws_a", "q1") is None
    assert cache.get("ws_a", "q2") is None
    assert cache.get("ws_b", "q1") is not None
    assert cache.get("ws_b", "q2") is not None
    cache.on_keys(["*"])  # a lost LISTEN connection: anything may have changed
    assert cache.get("ws_b", "q1") is None


def test_a_caller_changing_its_cached_queue_does_not_change_the_cache() -> None:
    cache = QueueCache(monotonic=FakeMonotonic())
    original = _queue("ws_a", "q", lease_seconds=30)
    cache.put(original)
    original.lease_seconds = 1
    hit = cache.get("ws_a", "q")
    assert hit is not None
    hit.lease_seconds = 2
    again = cache.get("ws_a", "q")
    assert again is not None and again.lease_seconds == 30


def test_payloads_are_measured_in_bytes_not_characters() -> None:
    keys = {f"queue:é{i:04d}" + "ü" * 40 for i in range(400)}  # two bytes per accented letter
    found = payloads(keys)
    assert all(len(p.encode()) < 7000 for p in found)
    assert sorted(k for p in found for k in p.split(" ")) == sorted(keys)


# -- instants on SQLite -------------------------------------------------------------------------------------

# Ordinary ones, one given in another zone, and the extremes of the range.
INSTANTS = [
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 123, tzinfo=timezone(timedelta(hours=2))),
    datetime(5, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("instant", INSTANTS)
def test_an_instant_is_stored_on_sqlite_as_the_text_sqlalchemy_would_store(instant: datetime) -> None:
    # Rows written before the one-step conversion, and any written through SQLAlchemy's own type, must
    # compare with new ones as text in time order.
    dialect = sqlite.dialect()
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours(instant) == theirs(instant.astimezone(UTC).replace(tzinfo=None))


def test_a_naive_instant_is_refused_on_sqlite() -> None:
    dialect = sqlite.dialect()
    with pytest.raises(ValueError, match="naive"):
        UtcDateTime().dialect_impl(dialect).bind_processor(dialect)(datetime(2026, 1, 1))


@pytest.mark.parametrize("instant", INSTANTS)
def test_an_instant_read_back_from_sqlite_is_the_same_aware_utc_instant(instant: datetime) -> None:
    dialect = sqlite.dialect()
    write = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    read = UtcDateTime().dialect_impl(dialect).result_processor(dialect, None)
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    for text in (write(instant), theirs(instant.astimezone(UTC).replace(tzinfo=None))):
        value = read(text)
        assert value == instant
        assert value.tzinfo is UTC


def test_sqlite_text_without_a_fraction_and_null_are_read() -> None:
    dialect = sqlite.dialect()
    read = UtcDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert read("2026-01-02 03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert read(None) is None


# -- copies of domain objects ----------------------------------------------------------------------------------


def test_a_changed_copy_has_the_changes_and_every_other_field_and_leaves_the_original() -> None:
    queue = Queue(
        id="queue_1",
        workspace_id="ws_1",
        name="reviews",
        description="people review drafts",
        lease_seconds=300,
        max_attempts=3,
        initial_interval_seconds=1.0,
        backoff_coefficient=2.0,
        max_interval_seconds=60.0,
        start_mode="auto",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    copy = changed(queue, start_mode="manual", lease_seconds=60)
    assert (copy.start_mode, copy.lease_seconds) == ("manual", 60)
    assert (queue.start_mode, queue.lease_seconds) == ("auto", 300)
    assert dataclasses.replace(queue, start_mode="manual", lease_seconds=60) == copy
    assert changed(queue) == queue and changed(queue) is not queue


def test_a_class_with_a_field_its_constructor_does_not_take_is_refused() -> None:
    @dataclasses.dataclass(slots=True)
    class Counted:
        name: str
        count: int = dataclasses.field(init=False, default=0)

    with pytest.raises(TypeError, match="constructor"):
        changed(Counted("a"), name="b")


# -- arguments of a statement run once per row ---------------------------------------------------------------

_ROWS_TABLE = sa.Table(
    "rows",
    sa.MetaData(),
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("at", UtcDateTime()),
    sa.Column("doc", sa.JSON()),
    sa.Column("n", sa.Integer),
)
_ROWS = [
    {"id": "a", "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "doc": {"k": [1, "two"]}, "n": 1},
    {"id": "b", "at": None, "doc": None, "n": None},
    {"id": "c", "at": datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "doc": "text", "n": 3},
]


def _compiled_for_sqlite(stmt: sa.Insert | sa.Update) -> _Compiled:
    return _compile(stmt, sqlite.dialect())


def test_each_row_s_arguments_are_what_one_row_at_a_time_gives() -> None:
    compiled = _compiled_for_sqlite(sa.insert(_ROWS_TABLE))
    each = compiled.args_each(_ROWS)
    assert each == [compiled.args(row) for row in _ROWS]
    assert each[0][1] == "2026-01-02 03:04:05.000000" and json.loads(each[0][2]) == {"k": [1, "two"]}
    assert each[1][1:] == [None, None, None]  # nulls stay nulls, not JSON's null
    assert each[2][1] == "2026-01-02 03:04:05.000000"  # another zone, stored as UTC


def test_rows_with_one_value_each_are_rows_of_one() -> None:
    one = _compiled_for_sqlite(sa.delete(_ROWS_TABLE).where(_ROWS_TABLE.c.id == sa.bindparam("key")))
    assert one.args_each([{"key": "a"}, {"key": "b"}]) == [["a"], ["b"]]


def test_a_value_the_statement_carries_itself_or_a_row_without_one_is_taken_the_general_way() -> None:
    carried = _compiled_for_sqlite(
        sa.update(_ROWS_TABLE).where(_ROWS_TABLE.c.id == sa.bindparam("key")).values(n=sa.bindparam("n", value=7))
    )
    rows = [{"key": "a"}, {"key": "b", "n": 9}]
    assert carried.args_each(rows) == [carried.args(row) for row in rows] == [[7, "a"], [9, "b"]]
    plain = _compiled_for_sqlite(sa.insert(_ROWS_TABLE))
    with pytest.raises(KeyError):
        plain.args_each([_ROWS[0], {"id": "short"}])  # as one row at a time would: no value for "at"


def test_statements_joined_as_one_keep_the_last_ones_own_with_parts_after_the_writes() -> None:
    from workloom.store.fast import _joined

    assert _joined(["INSERT INTO a VALUES ($1)", "SELECT 1"]) == "WITH w0 AS (INSERT INTO a VALUES ($1)) SELECT 1"
    assert _joined(["INSERT INTO a VALUES ($1)", "INSERT INTO b VALUES ($2)", "WITH c AS (UPDATE c) SELECT 2"]) == (
        "WITH w0 AS (INSERT INTO a VALUES ($1)), w1 AS (INSERT INTO b VALUES ($2)), c AS (UPDATE c) SELECT 2"
    )
    assert _joined(["DELETE FROM a", "WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r"]) == (
        "WITH RECURSIVE w0 AS (DELETE FROM a), r AS (SELECT 1) SELECT * FROM r"
    )
