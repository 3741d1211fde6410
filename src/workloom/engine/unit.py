"""The unit of work: one transaction per engine call, with its wake-ups sent only after commit.

Engine use cases are written as ``async def op(u: Unit, ...)``; ``Runner.run`` gives them a
transaction, and ``Runner.respond`` does the same while making the call idempotent under a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.clock import Clock
from workloom.domain.errors import IdempotencyMismatch, OutcomeUnknown, WorkloomError
from workloom.domain.models import Claim, Task
from workloom.engine.caches import QueueCache
from workloom.engine.empty_queues import EmptyQueues
from workloom.engine.handoff import Handoffs, Offer
from workloom.engine.principal import Principal
from workloom.engine.sealing import open_sealed, seal
from workloom.engine.signals import Signals
from workloom.store import events as event_store
from workloom.store import idempotency as store
from workloom.store import tasks as task_store
from workloom.store import workspaces as workspace_store
from workloom.store.database import Database, is_key_busy, is_transient
from workloom.store.fast import CommitUnknown, Write, sent_all, write_all, write_all_soon
from workloom.store.numbers import TaskNumbers

if TYPE_CHECKING:
    from workloom.engine.shared import SharedCommits

T = TypeVar("T")
Rendered = tuple[int, Any]
# What a unit of work counts for the metrics (``Metrics.count`` has a counter for each).
Tallied = Literal["completions", "failures", "lease_expiries"]

IDEMPOTENCY_RETENTION = timedelta(hours=24)
# Two transactions that lock the same rows in opposite orders: the database aborts one (deadlock or
# serialization failure), or a connection dies before its COMMIT was sent: running it again is always
# safe, since nothing of it was committed.
TRANSIENT_RETRIES = 4
# A call under an idempotency key whose commit's outcome was unknown runs again, at most this many times in
# all: a repeat gives back the first answer if that committed, and otherwise does the call.
UNKNOWN_OUTCOME_ATTEMPTS = 3
UNKNOWN_OUTCOME = (
    "the database connection was lost while this change was being committed, so it may or may not have been"
    " saved; look before repeating it (a repeat under the same Idempotency-Key is always safe: it gives back"
    " the first answer if that was saved)"
)
log = logging.getLogger("workloom.engine")


@dataclass(slots=True)
class Unit:
    connection: AsyncConnection
    principal: Principal
    now: datetime
    wakeups: set[str] = field(default_factory=set)
    deferred_error: WorkloomError | None = None
    tallies: Counter[Tallied] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    # The request's idempotency key, when ``Runner.respond`` runs it under one: runs remember the key
    # their explicit enqueue or their claim came with.
    idempotency_key: str | None = None
    # Kept by the runner across units: queues by name, and (PostgreSQL) task numbers reserved outside
    # this transaction. Units made without them read and number inside the transaction.
    queue_cache: QueueCache | None = None
    numbers: TaskNumbers | None = None
    # Rows to be written with the unit's events (``write_later``), not before.
    held: list[Write] = field(default_factory=list)
    # New tasks to be numbered and written at the unit's end (``create_later``).
    unnumbered: list[Task] = field(default_factory=list)
    # Called when the unit's last rows are written, for more to write with them (``finish_with``).
    finishing: list[Callable[[], Sequence[Write]]] = field(default_factory=list)
    # Whether the unit's connection was used: a call that failed without touching it wrote nothing.
    touched: bool = False
    # Waiting claimers' offers (``Handoffs``) and the claims this unit made for them, given them at commit.
    handoffs: Handoffs | None = None
    offers: dict[Offer, list[Claim]] = field(default_factory=dict)
    passed_over: list[Offer] = field(default_factory=list)  # taken out but not usable by this unit
    # Queues this unit found nothing more to claim in, noted at commit (``EmptyQueues``), and its mark.
    emptied: list[str] = field(default_factory=list)
    began: int = 0
    # A flush sent and not waited for yet (``flush_soon``): whatever uses the connection next waits for it.
    sending: asyncio.Future[None] | None = None

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id

    @property
    def conn(self) -> AsyncConnection:
        """The unit's transaction, for what it reads and writes now. Refused while rows are held back for
        the end (``write_later``): whatever ran next could need them, so ``flush`` first."""
        if self.held:
            raise RuntimeError("this unit holds rows back for its end; await u.flush() before using its connection")
        self.touched = True
        return self.connection

    def write_later(self, writes: Sequence[Write]) -> None:
        """Write these rows with the unit's events, at its end unless something flushes sooner. A unit whose
        only writes these are then takes one statement on PostgreSQL: sent without BEGIN and COMMIT, it is
        a transaction on its own (a create: one round trip where it was three)."""
        self.held.extend(writes)

    def create_later(self, new_tasks: Sequence[Task], writes: Sequence[Write] = ()) -> None:
        """Number these new tasks and write them (then ``writes``, their runs say) with the unit's events,
        as ``write_later``. Their numbers are reserved then, for every unit flushing together in one
        reservation, and set on these ``Task`` objects: read a new task's number only after the flush."""
        self.unnumbered.extend(new_tasks)
        self.held.extend(writes)

    def finish_with(self, rows: Callable[[], Sequence[Write]]) -> None:
        """Call ``rows`` when the unit's rows are written, after its new tasks are numbered, and write what
        it returns with them (an idempotent answer, which shows the numbers)."""
        self.finishing.append(rows)

    def wake(self, key: str) -> None:
        self.wakeups.add(key)

    def numbered_events(self) -> list[Write]:
        """The events recorded so far, taken to be written with the unit's next statement (which must not
        read them), when each has its number in its task's sequence already: a completion's, say, ahead
        of the claim of the next run, in that claim's round trip instead of one of their own at the end.
        None when some event is still to be numbered, or rows are held back for the end: the flush then
        writes them all, in their order. PostgreSQL only: on SQLite a claim is several statements, and the
        events all go in one at the end."""
        if (
            not self.events
            or self.held
            or self.unnumbered
            or self.connection.dialect.name != "postgresql"
            or any(e["task_sequence"] is None for e in self.events)
        ):
            return []
        recorded, self.events = self.events, []
        return event_store.event_inserts(recorded)

    def seen_empty(self, queue_id: str) -> None:
        """A claim of this unit found nothing more to claim in the queue (noted if the unit commits)."""
        self.emptied.append(queue_id)

    def tally(self, name: Tallied, amount: int = 1) -> None:
        """Count something for metrics; counted only if the transaction commits."""
        self.tallies[name] += amount

    def refuse_after_commit(self, error: WorkloomError) -> None:
        """Commit what was written (e.g. the record of a refused late result), then raise ``error``."""
        self.deferred_error = error

    async def flush(self, writes: Sequence[Write] = (), *, final: bool = False) -> None:
        """Write the rows held back and the events recorded so far: one sequence bump per task and one
        insert for all of them.

        ``writes`` (rows the events are about, say) are written first, in the same round trip as the
        events where nothing has to run between them. ``final``: nothing else runs in this transaction."""
        await flush_together([self], writes, final=final)

    @property
    def can_flush_soon(self) -> bool:
        """Whether ``flush_soon`` overlaps anything: on PostgreSQL, whose task numbers are reserved outside
        the transaction (on SQLite numbering uses the connection the flush would still be using)."""
        return self.numbers is not None

    async def flush_soon(self) -> None:
        """``flush`` without waiting for the database to run it: what is held and recorded is taken now, and
        written while the unit goes on building what it writes next (a large batch of creates: Python
        builds the next part while PostgreSQL inserts this one). The next flush, or use of the connection
        through ``sent``, waits for it first; a failure of it surfaces there. What ``finish_with`` asked
        for stays for the unit's last flush: an answer made now would miss what the unit does next."""
        finishing, self.finishing = self.finishing, []
        self.sending = asyncio.ensure_future(flush_together([self]))
        self.finishing = finishing

    async def sent(self) -> None:
        """Wait for the flush ``flush_soon`` sent, if one is on its way."""
        if self.sending is not None:
            sending, self.sending = self.sending, None
            await sending


def flush_together(units: Sequence[Unit], writes: Sequence[Write] = (), *, final: bool = False) -> Awaitable[None]:
    """``Unit.flush`` for units that share one transaction (``SharedCommits``): what they hold and the
    events they recorded, in their order, go in one write (one round trip on PostgreSQL). What is held is
    taken when this is called, and written when it is awaited, after any flush still on its way."""
    new_tasks = [t for u in units for t in u.unnumbered]
    held = [w for u in units for w in u.held]
    events = [e for u in units for e in u.events]
    finishing = [finish for u in units for finish in u.finishing]
    sending = [u.sending for u in units if u.sending is not None]
    for u in units:
        u.held, u.events, u.unnumbered, u.finishing, u.sending = [], [], [], [], None
    flushing = _flush_taken(units, sending, new_tasks, held, events, finishing, writes, final)
    return _then_all_sent(flushing, units[-1].connection) if final else flushing


async def _then_all_sent(flushing: Awaitable[None], conn: AsyncConnection) -> None:
    """``flushing``, then whatever the units sent without waiting (SQLite): all of it has run, and failed
    nowhere, before they commit."""
    await flushing
    await sent_all(conn)


async def _flush_taken(
    units: Sequence[Unit],
    sending: list[asyncio.Future[None]],
    new_tasks: list[Task],
    held: list[Write],
    events: list[dict[str, Any]],
    finishing: list[Callable[[], Sequence[Write]]],
    writes: Sequence[Write],
    final: bool,
) -> None:
    for earlier in sending:  # a flush still on its way goes first (and a failure of it stops this one)
        await earlier
    last_unit = units[-1]
    if new_tasks:
        # One unit's tasks are one call's (a batch): numbered as one run; several units' are several calls'.
        await _number(last_unit, new_tasks, whole=len(units) == 1)
    for u in units:
        u.touched = u.touched or bool(new_tasks or held or events or writes)
    conn, now = last_unit.connection, last_unit.now
    writes = [*task_store.task_inserts(new_tasks), *held, *writes]
    if events:
        # An event numbered already (a task created in this unit, its row written with its count) is not bumped.
        per_task = Counter(e["task_id"] for e in events if e["task_id"] is not None and e["task_sequence"] is None)
        if per_task and writes:
            await write_all(conn, writes)  # the bump below may be of a task these write
            writes = []
        last = await task_store.task_advance_sequences(conn, per_task, now) if per_task else {}
        next_number = {task_id: last[task_id] - count + 1 for task_id, count in per_task.items()}
        for event in events:
            task_id = event["task_id"]
            if task_id is not None and event["task_sequence"] is None:
                event["task_sequence"] = next_number[task_id]
                next_number[task_id] += 1
        writes.extend(event_store.event_inserts(events))
    if not finishing:
        await write_all(conn, writes, final=final)
        return
    # What ``finishing`` adds (an idempotent answer: rendered, sealed) needs nothing from these writes: on
    # SQLite they go to its thread first, and it writes them while this renders.
    sent = write_all_soon(conn, writes)
    try:
        last_rows = [w for finish in finishing for w in finish()]
        for u in units:
            u.touched = u.touched or bool(last_rows)
        await write_all(conn, last_rows if sent is not None else [*writes, *last_rows], final=final)
    finally:
        if sent is not None:
            await sent.done()


async def reserve_numbers(u: Unit, workspace_id: str, count: int, *, whole: bool = True) -> Sequence[int]:
    """``count`` task numbers of the workspace, ascending, and one run where ``whole``. On PostgreSQL
    reserved outside the unit's transaction (``TaskNumbers``; taken from those reserved ahead unless
    ``whole``); elsewhere inside it, the workspace row then locked until commit."""
    if u.numbers is not None:
        return await u.numbers.reserve(workspace_id, count, whole=whole)
    last = await workspace_store.workspace_next_task_numbers(u.conn, workspace_id, count)
    return range(last - count + 1, last + 1)


async def _number(u: Unit, new_tasks: list[Task], *, whole: bool) -> None:
    """Number new tasks in their order, one reservation per workspace (``whole``: each one run)."""
    counts = Counter(t.workspace_id for t in new_tasks)
    numbers = {ws: iter(await reserve_numbers(u, ws, count, whole=whole)) for ws, count in counts.items()}
    for task in new_tasks:
        task.number = next(numbers[task.workspace_id])


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    request: bytes  # everything that identifies the request: method, path and body
    # What of the call the key stands for: "" the call itself, "then" what it goes on to do once its own
    # answer is stored (a completion's wait for the next run, ``ThenWait``): stored under a hash of its own.
    part: str = ""
    key_hash: str = field(init=False)
    request_hash: str = field(init=False)

    def __post_init__(self) -> None:
        # A header's value cannot hold a line break, so no key a client sends hashes as another's part.
        named = self.key if not self.part else f"{self.key}\n{self.part}"
        object.__setattr__(self, "key_hash", hashlib.sha256(named.encode()).hexdigest())
        object.__setattr__(self, "request_hash", hashlib.sha256(self.request).hexdigest())

    def then(self) -> IdempotencyKey:
        """The key of what the call goes on to do once its own answer is stored (the runs it claims then
        still record the client's key)."""
        return IdempotencyKey(self.key, self.request, "then")

    def stored(self, workspace_id: str, rendered: Rendered, now: datetime, *, if_free: bool = False) -> Write:
        """``rendered`` (status, body) as the answer kept under this key: sealed, a write for the unit's last
        rows. By the call's own unit, or by one that hands a claimer waiting under the key its claims
        (``if_free``: see ``store.idempotency.idempotency_write``)."""
        status, body = rendered
        sealed = seal(self.key, orjson.dumps(body))
        return store.idempotency_write(
            workspace_id, self.key_hash, self.request_hash, status, sealed, now, if_free=if_free
        )


class Keyed(Generic[T]):
    """A call under an idempotency key (``Runner.respond``): the key's lock taken and an answer stored under
    it looked for (given back, if the request is the same); else the call made, and its answer stored with
    its rows, in its transaction. Calls that are taken together when they arrive together (``Each``, in
    ``SharedCommits``) are taken together under their keys too (``each``)."""

    def __init__(
        self,
        op: Callable[[Unit], Awaitable[T]],
        render: Callable[[T], Rendered],
        ident: IdempotencyKey,
        keep: Callable[[T], bool],
    ) -> None:
        self.op, self.render, self.ident, self.keep = op, render, ident, keep
        self.answers: list[Rendered] = []
        inner = type(op)
        # ``SharedCommits`` takes calls together by this: keyed calls of a kind that can be (``Each``).
        self.together_as: tuple[type, type] | None = (Keyed, inner) if hasattr(inner, "each") else None

    async def __call__(self, u: Unit) -> None:
        self.answers.clear()  # a transaction retried after a transient conflict starts over
        u.idempotency_key = self.ident.key
        if await self._given_back(u):
            return
        result = await self.op(u)
        self._answer_at_end(u, result, refused=lambda: u.deferred_error is not None)

    @staticmethod
    async def each(u: Unit, items: list[Keyed[Any]]) -> list[Any]:
        """Keyed calls of one kind taken together: the keys' locks taken and their answers looked for, in one
        statement; then the calls with no answer stored, together (their kind's ``each``), each recording its
        own key where it claims runs (``keyed``). What each call would have had alone: None (its answer is
        kept for it, given back or stored at the unit's end), or its refusal."""
        u.idempotency_key = None  # each call's own key goes with it (``keyed``)
        outcomes: list[Any] = [None] * len(items)
        fresh: list[int] = []
        stored = await store.idempotency_enter_many(u.conn, u.workspace_id, [item.ident.key_hash for item in items])
        for i, item in enumerate(items):
            item.answers.clear()
            try:
                if not item._give_back(stored[item.ident.key_hash]):
                    fresh.append(i)
            except IdempotencyMismatch as refused:  # nothing written: refused alone
                outcomes[i] = refused
        if not fresh:
            return outcomes
        ops = [_keyed_op(items[i].op, items[i].ident.key) for i in fresh]
        kind: Any = type(items[fresh[0]].op)
        done = await kind.each(u, ops)
        for i, outcome in zip(fresh, done, strict=True):
            if isinstance(outcome, WorkloomError):
                outcomes[i] = outcome  # refused: no answer stored, as when it is refused alone
            else:
                items[i]._answer_at_end(u, outcome, refused=lambda: False)
        return outcomes

    async def _given_back(self, u: Unit) -> bool:
        """Take the key's lock and look for its answer: True, the answer kept, when one is stored."""
        return self._give_back(await store.idempotency_enter(u.conn, u.workspace_id, self.ident.key_hash))

    def _give_back(self, stored: store.Stored | None) -> bool:
        """True, the answer kept, when one is ``stored`` under the key (for this same request)."""
        if stored is None:
            return False
        if stored[0] != self.ident.request_hash:
            raise IdempotencyMismatch(
                "this Idempotency-Key was used for a different request; use a new key for a new request"
            )
        assert stored[1] is not None and stored[2] is not None
        self.answers.append((stored[1], orjson.loads(open_sealed(self.ident.key, stored[2]))))
        return True

    def _answer_at_end(self, u: Unit, result: T, *, refused: Callable[[], bool]) -> None:
        ident = self.ident

        def answer() -> list[Write]:
            # Rendered once what the unit created is numbered (the answer may show the numbers); kept in the
            # unit's last write.
            self.answers[:] = [rendered := self.render(result)]
            if refused() or not self.keep(result):
                return []
            return [ident.stored(u.workspace_id, rendered, u.now)]

        u.finish_with(answer)


def _keyed_op(op: Any, key: str) -> Any:
    """``op`` recording ``key`` as its idempotency key where it claims runs, taken together with calls under
    other keys (an op that can be says so with ``keyed``)."""
    keyed = getattr(op, "keyed", None)
    return keyed(key) if keyed is not None else op


class Runner:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        signals: Signals,
        publish: Callable[[set[str]], None],
        on_commit: Callable[[Unit], None] = lambda _: None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.signals = signals
        self.publish = publish
        self.on_commit = on_commit
        self.queue_cache = QueueCache()
        signals.observe(self.queue_cache.on_keys)
        self.numbers = TaskNumbers(db.url) if db.is_postgres else None
        self.handoffs = Handoffs()
        self.empty_queues = EmptyQueues()
        signals.observe(self.empty_queues.on_keys)
        # Set by the engine: where ``shared`` calls go (without it, each runs on its own).
        self.shared: SharedCommits | None = None

    def unit(self, conn: AsyncConnection, principal: Principal) -> Unit:
        return Unit(
            connection=conn,
            principal=principal,
            now=self.clock.now(),
            queue_cache=self.queue_cache,
            numbers=self.numbers,
            handoffs=self.handoffs,
            began=self.empty_queues.now(),
        )

    async def run(
        self, principal: Principal, op: Callable[[Unit], Awaitable[T]], *, shared: bool = False, items: int = 1
    ) -> T:
        """Run ``op`` in a transaction of its own; ``shared``: in one it may share with other calls that
        arrive while it waits (``SharedCommits``), for calls on the hot paths; ``items``: how many items
        (completions, claims) the call is about, which decides whether it shares.

        A call whose connection died while its commit was on its way is not run again, since it may have
        committed: it raises ``OutcomeUnknown`` (``respond`` runs a call under an idempotency key again,
        which is safe)."""
        try:
            if shared and self.shared is not None and self.shared.takes(items):
                return await self.shared.run(principal, op, items)
            return await self._run_alone(principal, op)
        except CommitUnknown as exc:
            log.warning("a transaction's outcome is unknown: its connection closed while it was committing")
            raise OutcomeUnknown(UNKNOWN_OUTCOME) from exc

    async def _run_alone(self, principal: Principal, op: Callable[[Unit], Awaitable[T]]) -> T:
        for attempt in range(1, TRANSIENT_RETRIES + 1):
            unit: Unit | None = None
            try:
                async with self.db.transaction() as conn:
                    unit = self.unit(conn, principal)
                    result = await op(unit)
                    await unit.flush(final=True)
            except BaseException as exc:
                if unit is not None:
                    self.handoffs.settle(unit, committed=False, key_busy=is_key_busy(exc))
                if not isinstance(exc, Exception):
                    raise
                if attempt < TRANSIENT_RETRIES and is_transient(exc):
                    log.info(
                        "transaction retried after a transient failure",
                        extra={"attempt": attempt, "error": type(exc).__name__},
                    )
                    continue
                raise
            assert unit is not None
            self._after_commit(unit)
            return result
        raise AssertionError("unreachable")

    async def respond(
        self,
        principal: Principal,
        op: Callable[[Unit], Awaitable[T]],
        render: Callable[[T], Rendered],
        idempotency: IdempotencyKey | None,
        *,
        keep: Callable[[T], bool] = lambda _: True,
        shared: bool = False,
        items: int = 1,
    ) -> Rendered:
        """Run ``op`` and render its answer; under an idempotency key, a repeat gets the first answer.

        ``keep`` decides whether an answer is final enough to store (an empty long-poll is not).
        """
        if idempotency is None:
            return render(await self.run(principal, op, shared=shared, items=items))
        guarded = Keyed(op, render, idempotency, keep)
        for attempt in range(1, UNKNOWN_OUTCOME_ATTEMPTS + 1):
            try:
                await self.run(principal, guarded, shared=shared, items=items)
            except OutcomeUnknown:
                if attempt == UNKNOWN_OUTCOME_ATTEMPTS:
                    raise
                continue  # the key says whether it committed: if so, the repeat finds the answer it stored
            return guarded.answers[0]
        raise AssertionError("unreachable")

    async def answered(self, workspace_id: str, idempotency: IdempotencyKey) -> bool:
        """Whether an answer is stored under the key (a read, without its lock: it may be stored a moment
        later, which whoever stores an answer under the key must allow for anyway)."""
        key_hash = idempotency.key_hash
        stored = await self.db.reading(lambda conn: store.idempotency_get(conn, workspace_id, key_hash))
        return stored is not None

    def _after_commit(self, unit: Unit) -> None:
        self.handoffs.settle(unit, committed=True)
        self.publish(unit.wakeups)
        self.signals.notify(unit.wakeups)
        self._note_empty(unit)
        self.on_commit(unit)
        if unit.deferred_error is not None:
            raise unit.deferred_error

    async def run_together(self, body: Callable[[AsyncConnection, Callable[[Principal], Unit]], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction, with as many units as it makes (``make(principal)``) on its
        connection, each what a transaction of its own would be: what they hold and record written together
        at its end, and after the commit their wake-ups sent and their offers settled (as a shared commit's).
        If ``body`` raises, nothing commits and the error is the caller's. The units must each touch rows of
        their own: what they record is numbered together at the end."""
        units: list[Unit] = []
        try:
            async with self.db.transaction() as conn:

                def make(principal: Principal) -> Unit:
                    units.append(self.unit(conn, principal))
                    return units[-1]

                result = await body(conn, make)
                if units:
                    await flush_together(units, final=True)
        except BaseException:
            for unit in units:
                self.handoffs.settle(unit, committed=False)
            raise
        self.after_commit_together(units)
        return result

    def after_commit_together(self, units: list[Unit]) -> None:
        """``_after_commit`` for the units of one shared commit: their wake-ups sent once, errors left to the caller."""
        wakeups = set().union(*(unit.wakeups for unit in units))
        for unit in units:
            self.handoffs.settle(unit, committed=True)
        self.publish(wakeups)
        self.signals.notify(wakeups)
        for unit in units:
            self._note_empty(unit)
            self.on_commit(unit)

    def _note_empty(self, unit: Unit) -> None:
        """After the unit's own wake-ups: a queue it enqueued to as well is not noted empty."""
        for queue_id in unit.emptied:
            self.empty_queues.seen_empty(queue_id, unit.began)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
        if self.numbers is not None:
            await self.numbers.close()

    async def prune_idempotency(self) -> int:
        async with self.db.transaction() as conn:
            return await store.idempotency_prune(conn, self.clock.now() - IDEMPOTENCY_RETENTION)
