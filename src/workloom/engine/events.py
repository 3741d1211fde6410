"""Recording events: written in the same transaction as the change they describe (transactional outbox)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import Actor
from workloom.domain.errors import NotFound
from workloom.domain.models import Event
from workloom.engine.principal import Principal
from workloom.engine.signals import Signals, Waiter, events_key
from workloom.engine.unit import Unit
from workloom.store import events as store
from workloom.store import tasks as task_store
from workloom.store.database import Database


async def record(
    u: Unit,
    type: str,
    *,
    task_id: str | None = None,
    run_id: str | None = None,
    payload: dict[str, Any] | None = None,
    actor: Actor | None = None,
    task_sequence: int | None = None,
    origin: Actor | None = None,
) -> None:
    """Append one event to the unit of work; it is written with the others just before commit, and a
    task's events get consecutive numbers in that task's own sequence (``task_sequence`` given: the
    number is already taken, by a task created in this unit with its event count). ``origin``: the call the
    event is part of, when not this unit's own (a claim made for a waiting claimer, ``Handoffs``)."""
    who = actor or u.principal.actor
    via = origin or u.principal.origin
    u.events.append(
        {
            "workspace_id": u.workspace_id,
            "task_id": task_id,
            "run_id": run_id,
            "task_sequence": task_sequence,
            "type": type,
            "actor_kind": who.kind,
            "actor_ref": who.ref,
            "origin_kind": via.kind,
            "origin_ref": via.ref,
            "payload": payload or {},
            "created_at": u.now,
        }
    )
    u.wake(events_key(u.workspace_id))


log = logging.getLogger("workloom.events")
T = TypeVar("T")

# A writer left idle inside its transaction would hold every stream back; past this wait, deliver anyway.
HORIZON_PATIENCE_SECONDS = 5.0
# How soon a read held back for transactions in flight is made again, if nothing wakes it sooner.
HELD_RECHECK_SECONDS = 0.02
READ_BATCH = 500
# Events a stream may have waiting for its client before it stops being handed more (it catches up later).
SUBSCRIPTION_BUFFER = 1000


_Batch = tuple[list[Event], frozenset[int] | None]


class EventReader:
    """Reads the log for timelines and streams; streams wait on wake-ups rather than polling hard."""

    def __init__(self, db: Database, signals: Signals, poll_seconds: float = 1.0) -> None:
        self.db = db
        self.signals = signals
        self.poll_seconds = poll_seconds
        self._reads: dict[tuple[str, int], asyncio.Future[_Batch]] = {}
        self._tails: dict[str, _Tail] = {}
        # Reads that go on when whoever awaited them is cancelled (``shielded``), until they end.
        self._in_flight: set[asyncio.Future[Any]] = set()

    def shielded(self, read: Awaitable[T]) -> Awaitable[T]:
        """``read`` run to its end even if the caller is cancelled: a read cancelled mid-query loses its
        connection without closing it (on SQLite, still holding the database's write lock). ``close`` waits
        for every such read, so that none outlives the engine's connections."""
        running = asyncio.ensure_future(read)
        self._in_flight.add(running)
        running.add_done_callback(self._in_flight.discard)
        return asyncio.shield(running)

    async def timeline(
        self, principal: Principal, task_id: str, after_sequence: int = 0, limit: int = 1000
    ) -> list[Event]:

        async def read(conn: AsyncConnection) -> list[Event]:
            task = await task_store.task_get(conn, principal.workspace_id, task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            return await store.event_list_for_task(
                conn, principal.workspace_id, task.id, after_sequence=after_sequence, limit=limit
            )

        return await self.db.reading(read)

    async def last_sequence(self, principal: Principal) -> int:
        return await self.db.reading(lambda conn: store.event_last_sequence(conn, principal.workspace_id))

    async def follow_task(
        self, principal: Principal, task_id: str, after_sequence: int, stop: asyncio.Event | None = None
    ) -> AsyncIterator[Event]:
        """Every event of one task after ``after_sequence``, then new ones as they happen."""
        cursor = after_sequence
        with self.signals.waiter(events_key(principal.workspace_id)) as waiter:
            while stop is None or not stop.is_set():
                # Shielded: a stream is stopped by cancelling it.
                batch = await self.shielded(self.timeline(principal, task_id, cursor, limit=500))
                for event in batch:
                    cursor = event.task_sequence or cursor
                    yield event
                if not batch:
                    await waiter.wait(self.poll_seconds)

    def subscribe(
        self,
        principal: Principal,
        after: int,
        *,
        types: list[str] | None = None,
        task_id: str | None = None,
        stop: asyncio.Event | None = None,
        buffer: int = SUBSCRIPTION_BUFFER,
    ) -> Feed:
        """The workspace's events after global sequence ``after``, in order, never passing a row that an
        earlier, still-uncommitted transaction could precede (so a resumed stream misses nothing); taken
        with ``await feed.next(timeout)`` and closed with ``feed.close()``."""
        wanted = frozenset(types) if types else None

        def accepts(event: Event) -> bool:
            return (wanted is None or event.type in wanted) and (task_id is None or event.task_id == task_id)

        return Feed(self, principal.workspace_id, after, accepts, stop, buffer)

    async def close(self) -> None:
        """End every feed and stop reading for them (the engine is stopping); return once no read is left
        running, whoever started it."""
        for tail in list(self._tails.values()):
            await tail.close()
        if self._in_flight:
            ended, _ = await asyncio.wait(set(self._in_flight))
            for read in ended:  # what failed here was to be tried again, by readers now gone
                if not read.cancelled():
                    read.exception()

    def _tail(self, workspace_id: str) -> _Tail:
        tail = self._tails.get(workspace_id)
        if tail is None:
            tail = self._tails[workspace_id] = _Tail(self, workspace_id)
        return tail

    async def _read_after(self, workspace_id: str, cursor: int) -> _Batch:
        """One database read shared by every stream of the workspace waiting at the same cursor: a new
        event wakes all of them at once, and a thousand subscribers should cost one query, not a thousand."""
        key = (workspace_id, cursor)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._read_batch(workspace_id, cursor))
            self._reads[key] = shared
            shared.add_done_callback(lambda _f: self._reads.pop(key, None))
        return await self.shielded(shared)

    async def _read_batch(self, workspace_id: str, cursor: int) -> _Batch:
        return await self.db.reading(
            lambda conn: store.event_list_after(conn, workspace_id, after=cursor, limit=READ_BATCH)
        )


class _Horizon:
    """How far a read of the log may be handed out, where a later sequence number can commit before an
    earlier one (PostgreSQL takes them before commit).

    An event numbered below the last one a read saw, and not seen by it, belongs to a transaction that took
    its number before that last event was written: in flight when the read's snapshot was taken, or about to
    be (a transaction whose first write is its events takes their numbers just before its id). So the events
    a read saw are handed out once a later read finds every transaction in flight at the first ended, and
    that later read (which sees all they committed) supplies them; with a number missing and none in flight,
    the later read is waited for all the same. A read that found no number missing up to its last event is
    whole at once (the common case: a transaction takes its numbers just before its commit). A transaction
    that stays open past ``HORIZON_PATIENCE_SECONDS`` (a session left idle inside its transaction) is no
    longer waited for.

    (A horizon written with each event, the next transaction id as of its statement's snapshot, did not do:
    a transaction that took its id after that snapshot and its number before the event's could still be
    in flight, and the stream passed its events for good.)"""

    def __init__(self) -> None:
        self._pending: tuple[int, frozenset[int]] | None = None  # up to this sequence, once these have ended
        self._pending_since = 0.0
        self._given_up: frozenset[int] = frozenset()  # in flight past our patience: no longer waited for

    def deliverable(self, batch: list[Event], in_flight: frozenset[int] | None) -> tuple[int, bool]:
        """How many events of ``batch`` (in order) may go out, and whether the rest are held back;
        ``in_flight``: where a number below the last of ``batch`` is missing, the transactions that may yet
        commit it (None: none is missing).

        A number missing with nothing in flight is waited for too, for one more read: the transaction that
        took it may not have had its id yet (one whose first write is its events takes their numbers just
        before its id). The next read's snapshot, later, has that id in flight if it has not ended. Handed
        out at once, an event committed that way was passed for good (seen: one completion missing from a
        stream, under load, while every session of the database was ended and made again)."""
        if in_flight is None or not batch:
            self._pending = None
            return len(batch), False
        self._given_up &= in_flight  # an ended transaction's id never comes back
        waiting_for = in_flight - self._given_up
        whole_up_to: int | None = None
        if self._pending is not None:
            up_to, pending = self._pending
            still = pending & waiting_for
            if still and time.monotonic() - self._pending_since >= HORIZON_PATIENCE_SECONDS:
                log.warning("an event stream stopped waiting for a transaction left open", extra={"count": len(still)})
                self._given_up |= still
                still = frozenset()
            if not still:
                whole_up_to, self._pending = up_to, None
        if self._pending is None:
            self._pending, self._pending_since = (batch[-1].sequence, waiting_for), time.monotonic()
        count = 0 if whole_up_to is None else bisect.bisect_right(batch, whole_up_to, key=lambda e: e.sequence)
        return count, count < len(batch)


class Feed:
    """One stream's way through a workspace's log. A stream far behind (a full batch still to read) reads
    on its own until it is nearly level; then it joins the workspace's tail, which reads each change once
    for every stream in this process and hands it to them (with a thousand streams, one read and a list
    append each, rather than a thousand reads woken at once)."""

    def __init__(
        self,
        reader: EventReader,
        workspace_id: str,
        after: int,
        accepts: Callable[[Event], bool],
        stop: asyncio.Event | None,
        buffer: int,
    ) -> None:
        self._reader = reader
        self._workspace_id = workspace_id
        self._accepts = accepts
        self._stop = stop
        self._horizon = _Horizon()
        self._subscription: Subscription | None = None
        self._cursor = after
        self._buffer = buffer

    async def next(self, timeout: float) -> list[Event] | None:
        """The events that arrived (waiting up to ``timeout`` for some: ``[]`` when none did), or None once
        the stream is stopped."""
        while self._subscription is None:
            if self._stop is not None and self._stop.is_set():
                return None
            batch, in_flight = await self._reader._read_after(self._workspace_id, self._cursor)
            count, held = self._horizon.deliverable(batch, in_flight)
            if count:
                self._cursor = batch[count - 1].sequence
            if len(batch) < READ_BATCH or held:
                self._subscription = self._reader._tail(self._workspace_id).add(
                    self._cursor, self._accepts, self._stop, self._buffer
                )
            events = [event for event in batch[:count] if self._accepts(event)]
            if events:
                return events
        return await self._subscription.next(timeout)

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()


class Subscription:
    """A stream at the end of the log: the tail offers it every event, it keeps the ones it wants until
    its stream takes them. One whose stream stops taking them (a client not reading) holds at most
    ``buffer``; past that the tail stops offering to it, and it rejoins from where it stopped once its
    stream has caught up, so a slow client costs its own delay and nothing else."""

    def __init__(self, tail: _Tail, cursor: int, accepts: Callable[[Event], bool], buffer: int) -> None:
        self._tail = tail
        self.cursor = cursor  # the last event offered: taken or passed over
        self._accepts = accepts
        self._buffer = buffer
        self._events: list[Event] = []
        self._ready: asyncio.Future[None] | None = None
        self.overflowed = False
        self.ended = False

    def offer(self, event: Event) -> None:
        if self.overflowed or event.sequence <= self.cursor:
            return
        if len(self._events) >= self._buffer:
            self.overflowed = True
            return
        self.cursor = event.sequence
        if self._accepts(event):
            self._events.append(event)
            self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def next(self, timeout: float) -> list[Event] | None:
        if not self._events and not self.ended:
            if self.overflowed:
                self.overflowed = False
                self._tail.kick()
            loop = asyncio.get_running_loop()
            self._ready = ready = loop.create_future()
            timer = loop.call_later(max(timeout, 0.0), _settle, ready)
            try:
                await ready
            finally:
                timer.cancel()
                self._ready = None
        if not self._events:
            return None if self.ended else []
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        self.ended = True
        self._tail.remove(self)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Tail:
    """The live end of one workspace's log in this process, read by one task while any stream follows it:
    from the oldest cursor among them, on every wake-up for the workspace's events."""

    def __init__(self, reader: EventReader, workspace_id: str) -> None:
        self._reader = reader
        self._workspace_id = workspace_id
        self._subscriptions: dict[Subscription, None] = {}
        self._stops: dict[asyncio.Event, asyncio.Future[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._waiter: Waiter | None = None

    def add(
        self, cursor: int, accepts: Callable[[Event], bool], stop: asyncio.Event | None, buffer: int
    ) -> Subscription:
        subscription = Subscription(self, cursor, accepts, buffer)
        self._subscriptions[subscription] = None
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        else:
            # It may be partway through a read from a later cursor: have it read again from this one.
            self.kick()
        if stop is not None and stop not in self._stops:
            watcher = self._stops[stop] = asyncio.ensure_future(stop.wait())
            watcher.add_done_callback(lambda _f: self._end_all())
        return subscription

    def remove(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription, None)

    def kick(self) -> None:
        if self._waiter is not None:
            self._waiter.fire()

    def _end_all(self) -> None:
        if not self._stops or not any(stop.is_set() for stop in self._stops):
            return  # a watcher cancelled with the task
        for subscription in list(self._subscriptions):
            subscription.end()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.end()
        self._subscriptions.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        reader, horizon_of = self._reader, _Horizon()
        with reader.signals.waiter(events_key(self._workspace_id)) as waiter:
            self._waiter = waiter
            try:
                while self._subscriptions:
                    following = [s for s in self._subscriptions if not s.overflowed and not s.ended]
                    if not following:
                        await waiter.wait(reader.poll_seconds)
                        continue
                    cursor = min(s.cursor for s in following)
                    try:
                        batch, in_flight = await reader.shielded(reader._read_batch(self._workspace_id, cursor))
                    except Exception:  # the database away for a moment: the streams wait, then go on
                        log.warning("reading the event log for streams failed; trying again", exc_info=True)
                        await waiter.wait(reader.poll_seconds)
                        continue
                    count, held = horizon_of.deliverable(batch, in_flight)
                    for event in batch[:count]:
                        for subscription in following:
                            subscription.offer(event)
                    if held:
                        # The transactions waited for end within milliseconds; one of this process's wakes
                        # the waiter as it commits.
                        await waiter.wait(HELD_RECHECK_SECONDS)
                    elif len(batch) < READ_BATCH:
                        await waiter.wait(reader.poll_seconds)
            finally:
                self._waiter = None
                for watcher in self._stops.values():
                    watcher.cancel()
                self._stops.clear()
                if self._reader._tails.get(self._workspace_id) is self and not self._subscriptions:
                    del self._reader._tails[self._workspace_id]
