"""The engine as one object: wires store, clock, wake-ups, ticker and metrics, and exposes the use cases.

API routers, dialects, the CLI and tests hold a ``Workloom`` and call its methods; each method is one
transaction (``Runner``), and nothing above this layer touches SQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from workloom.domain.actors import Actor
from workloom.domain.clock import Clock, SystemClock
from workloom.domain.models import Claim, Queue, Run
from workloom.engine import queues, runs, tasks
from workloom.engine import queues as queue_cases
from workloom.engine.access import Access
from workloom.engine.events import EventReader
from workloom.engine.handoff import KeyedAnswer, Offer
from workloom.engine.metrics import Metrics
from workloom.engine.principal import Principal
from workloom.engine.shared import SharedCommits
from workloom.engine.signals import Signals, Waiter, queue_key, work_key
from workloom.engine.ticker import Ticker
from workloom.engine.unit import IdempotencyKey, Rendered, Runner, Unit
from workloom.store import migrate
from workloom.store.database import Database, connect
from workloom.store.notify import Listener, Notifier

T = TypeVar("T")

# Wake-ups are the fast path; this poll only bounds how long a missed one (a retry whose backoff ran
# out between ticks, a dropped LISTEN connection) can delay a waiting claimer (WORKLOOM_CLAIM_POLL_SECONDS).
CLAIM_POLL_SECONDS = 1.0
# Shared commits open at once on PostgreSQL: two, so that one group waiting on a row lock does not hold
# back every call (one was as fast here; three made groups smaller and cost the database more per task).
# SQLite has one writer (and one pooled connection): one group at a time, taking every call waiting.
SHARED_GROUPS = 2


def _local_only(_keys: set[str]) -> None:
    """SQLite: one process, so the in-process signals are all the wake-ups there are."""


class Workloom:
    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        tick_interval: float = 0.5,
        shared_groups: int | None = None,
        claim_poll_seconds: float = CLAIM_POLL_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.claim_poll_seconds = claim_poll_seconds
        self.signals = Signals()
        self.metrics = metrics or Metrics()
        self._listener: Listener | None = None
        self._notifier = Notifier(db.url, own_listener=self._listener_pid) if db.is_postgres else None
        self.runner = Runner(
            db, self.clock, self.signals, self._notifier.send if self._notifier else _local_only, self.metrics.count
        )
        groups = shared_groups if shared_groups is not None else (SHARED_GROUPS if db.is_postgres else 1)
        if groups > 0:
            self.runner.shared = SharedCommits(
                self.runner,
                groups=groups,
                on_group=self.metrics.shared_commits.observe,
                any_size=not db.is_postgres,
            )
        self.access = Access(db, self.clock)
        self.events = EventReader(db, self.signals)
        self.ticker = Ticker(self.runner, self.clock, interval=tick_interval)
        self.metrics.count_claimers(lambda: self.signals.claimers)

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None, *, pool_size: int = 20, **kwargs: Any) -> Workloom:
        return cls(connect(url, pool_size=pool_size), clock, **kwargs)

    async def migrate(self) -> None:
        await migrate.upgrade(self.db)

    async def start(self, *, ticker: bool = True) -> None:
        """Begin background work: the LISTEN connection (PostgreSQL) and the ticker."""
        if self.db.is_postgres:
            notifier = self._notifier
            own = (lambda pid: pid == notifier.sender_pid) if notifier is not None else (lambda _pid: False)
            on_hello = notifier.heard_from_another if notifier is not None else (lambda: None)
            self._listener = Listener(self.db.url, self.signals.notify, own=own, on_hello=on_hello)
            await self._listener.start()
            if notifier is not None:
                await notifier.start()
        if ticker:
            await self.ticker.start()

    async def stop(self) -> None:
        await self.ticker.stop()
        await self.events.close()
        if self._listener is not None:
            await self._listener.stop()
        await self.runner.close()
        if self._notifier is not None:
            await self._notifier.close()
        await self.db.dispose()

    def _listener_pid(self) -> int | None:
        return self._listener.pid if self._listener is not None else None

    async def ready(self) -> tuple[bool, str]:
        try:
            current = await migrate.is_current(self.db)
        except Exception as exc:  # the point is to report any failure, not to handle it
            return False, f"database unreachable: {type(exc).__name__}"
        return (True, "ok") if current else (False, "migrations pending: run 'workloom migrate'")

    # -- running use cases -------------------------------------------------------------------------------

    async def run(
        self, principal: Principal, op: Callable[[Unit], Awaitable[T]], *, shared: bool = False, items: int = 1
    ) -> T:
        """Run the use case ``op`` as one unit of work. ``shared``: a call of a hot path (a worker's
        completion, a create), which may commit together with others arriving at the same time; ``items``:
        how many items it is about (``SharedCommits.takes``)."""
        return await self.runner.run(principal, op, shared=shared, items=items)

    async def respond(
        self,
        principal: Principal,
        op: Callable[[Unit], Awaitable[T]],
        render: Callable[[T], Rendered],
        idempotency: IdempotencyKey | None = None,
        *,
        shared: bool = False,
        items: int = 1,
    ) -> Rendered:
        return await self.runner.respond(principal, op, render, idempotency, shared=shared, items=items)

    async def respond_claiming(
        self,
        principal: Principal,
        op: Callable[[Unit], Awaitable[tuple[T, list[Claim]]]],
        render: Callable[[tuple[T, list[Claim]]], Rendered],
        idempotency: IdempotencyKey | None = None,
        *,
        shared: bool = False,
        items: int = 1,
        then: ThenWait | None = None,
    ) -> Rendered:
        """``respond`` for a call that also claims runs (a completion that claims the next), counted as claims.

        ``then``: when the call claimed nothing, it goes on as a long-poll of the queue for the same worker
        (``claim``) and is answered with what that brings. The wait runs under a key of its own derived from
        the call's (``IdempotencyKey.then``): the call's answer is stored before the wait begins, so a repeat
        gives that back and waits again, or gives back what the wait was handed."""
        claimed: list[Claim] = []
        results: list[T] = []

        def render_counting(done: tuple[T, list[Claim]]) -> Rendered:
            claimed[:] = done[1]  # a transaction run again sets it again
            results[:] = [done[0]]
            return render(done)

        rendered = await self.runner.respond(principal, op, render_counting, idempotency, shared=shared, items=items)
        if claimed:
            self.metrics.claims.labels(claimed[0].run.queue or "").inc(len(claimed))
        if then is None or then.seconds <= 0 or claimed or rendered[0] >= 300:
            return rendered
        if not results and then.claimed(rendered):  # an answer given back under its key, with its claims
            return rendered
        holder = then.at or await self._holder(principal, results[0] if results else None, then.run_id)
        if holder is None:
            return rendered
        queue_name, worker = holder
        return await self.claim(
            principal,
            queue_name,
            worker,
            limit=then.limit,
            lease_seconds=then.lease_seconds,
            start=then.start,
            wait_seconds=then.seconds,
            render=lambda claims: then.adding(rendered, claims),
            idempotency=idempotency.then() if idempotency is not None else None,
            give_up=then.give_up,
            unanswered=bool(results),  # the call ran here, under its key's lock: its wait has not begun before
        )

    async def _holder(self, principal: Principal, done: object, run_id: str | None) -> tuple[str, Actor] | None:
        """The queue and the worker of the run a completion completed (``ThenWait.run_id``): from the run it
        returned, or read when its answer was given back under its key."""
        run = done if isinstance(done, Run) else None
        if run is None and run_id is not None:
            run = await self.run(principal, lambda u: runs.get(u, run_id))
        if run is None or run.queue is None or run.claimed_by is None:
            return None
        return run.queue, run.claimed_by

    async def claim(
        self,
        principal: Principal,
        queue_name: str,
        worker: Actor,
        *,
        limit: int,
        lease_seconds: int | None,
        wait_seconds: float,
        render: Callable[[list[Claim]], Rendered],
        idempotency: IdempotencyKey | None = None,
        give_up: Callable[[], Awaitable[bool]] | None = None,
        unanswered: bool = False,
        start: bool = False,
    ) -> Rendered:
        """Claim up to ``limit`` runs, waiting up to ``wait_seconds`` for the first to arrive (long-poll).

        ``give_up`` (true once the server is shutting down or the client has gone) ends the wait early:
        a claim made for a caller who is no longer there would sit out its lease unworked. ``unanswered``:
        no answer can be stored under the key yet, so none is looked for before a wait."""
        principal.require("runs.work")  # here too: a long-poll may wait, and be handed work, without a look
        queue = await self._queue(principal, queue_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        key = queue_key(queue.id)
        # Seen empty an instant ago (``EmptyQueues``): wait for a wake-up at once rather than look first.
        # Under a key, once a read has found no answer stored under it to give back: while it waits, an
        # answer stored meanwhile (a retry of the call, elsewhere) keeps it from being handed anything
        # (``Handoffs``), and its next look gives that answer back.
        look = not (
            wait_seconds > 0
            and self.runner.empty_queues.is_empty(queue.id)
            and (
                idempotency is None or unanswered or not await self.runner.answered(principal.workspace_id, idempotency)
            )
        )
        handed: list[Claim] = []
        with self.signals.waiter(key, exclusive=True) as waiter:
            waited = False
            while True:
                if waited and give_up is not None and await give_up():
                    return render([])  # nobody is listening: claim nothing for them
                final = loop.time() >= deadline
                if look or final:
                    found: list[int] = []
                    gone = give_up if waited else None
                    attempt = self._claim_attempt(queue_name, worker, limit, lease_seconds, start, found, gone)
                    try:
                        rendered = await self.runner.respond(
                            principal,
                            attempt,
                            render,
                            idempotency,
                            keep=_keep_claims(final),
                            shared=True,
                            items=limit,
                        )
                    except _CallerGone:
                        return render([])
                    claimed = sum(found)
                    if claimed or final or not found:  # not found: a stored answer was replayed
                        break
                look = True
                keyed = _keyed(idempotency, render)
                offer = Offer(
                    principal, worker, frozenset((queue.name,)), limit, lease_seconds, give_up, waiter.answer, keyed,
                    start=start,
                )  # fmt: skip
                handed = await self._wait(waiter, deadline, offer)
                if handed:
                    rendered, claimed = offer.rendered or render(handed), len(handed)
                    self.metrics.handoffs.inc(claimed)
                    break
                waited = True
        if claimed:
            self.metrics.claims.labels(queue_name).inc(claimed)
        if claimed >= limit and _more_maybe(handed, waiter):
            self.signals.pass_on(key)
        return rendered

    async def claim_next(
        self,
        principal: Principal,
        worker: Actor,
        *,
        queues: list[str] | None = None,
        lease_seconds: int | None = None,
        wait_seconds: float = 0.0,
        render: Callable[[Claim | None], Rendered],
        idempotency: IdempotencyKey | None = None,
        give_up: Callable[[], Awaitable[bool]] | None = None,
        start: bool = False,
    ) -> Rendered:
        """``runs.claim_next``, waiting up to ``wait_seconds`` for a run to become claimable (long-poll).

        Waits on the named queues' wake-ups; on the whole workspace's when no queue is named, or when a
        named one does not exist yet (a task naming it will create it)."""
        principal.require("runs.work")
        names = list(dict.fromkeys(queues)) if queues is not None else None
        keys = [work_key(principal.workspace_id)]
        if names is not None:
            known = await self.run(principal, lambda u: queue_cases.ids_by_name(u, names))
            if len(known) == len(names):
                keys = [queue_key(queue_id) for queue_id in known.values()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        handed: list[Claim] = []
        with self.signals.waiter(*keys, exclusive=True) as waiter:
            waited = False
            while True:
                if waited and give_up is not None and await give_up():
                    return render(None)  # nobody is listening: claim nothing for them
                final = loop.time() >= deadline
                found: list[Claim | None] = []
                try:
                    rendered = await self.runner.respond(
                        principal,
                        self._claim_next_attempt(
                            worker, names, lease_seconds, start, found, give_up if waited else None
                        ),
                        render,
                        idempotency,
                        keep=_keep_claim(final),
                        shared=True,
                    )
                except _CallerGone:
                    return render(None)
                if final or not found or found[0] is not None:  # not found: a stored answer was replayed
                    break
                wanted = frozenset(names) if names is not None else None
                keyed = _keyed(idempotency, lambda claims: render(claims[0]))
                offer = Offer(principal, worker, wanted, 1, lease_seconds, give_up, waiter.answer, keyed, start=start)
                handed = await self._wait(waiter, deadline, offer)
                if handed:
                    self.metrics.handoffs.inc()
                    found[:] = handed[:1]
                    rendered = offer.rendered or render(handed[0])
                    break
                waited = True
        if found and found[0] is not None:
            self.metrics.claims.labels(found[0].run.queue or "").inc()
            if _more_maybe(handed, waiter):
                self.signals.pass_on(*keys)
        return rendered

    async def _wait(self, waiter: Waiter, deadline: float, offer: Offer) -> list[Claim]:
        """A long-poll's wait for a wake-up (until its ``deadline`` on the loop's clock, or the poll for a
        missed wake-up), with its ``offer`` open meanwhile (``Handoffs``): the claims handed to it, once they
        are committed, or none."""
        timeout = min(self.claim_poll_seconds, max(deadline - asyncio.get_running_loop().time(), 0.0))
        handoffs = self.runner.handoffs
        handoffs.open(offer)
        try:
            await waiter.wait(timeout)
        except BaseException:
            handoffs.withdraw_now(offer)
            raise
        return await handoffs.withdraw(offer)

    async def _queue(self, principal: Principal, name: str) -> Queue:
        """The queue, from the cache without a transaction when it is there."""
        hit = self.runner.queue_cache.get(principal.workspace_id, name)
        return hit if hit is not None else await self.run(principal, lambda u: queues.get(u, name, cached=True))

    def _claim_next_attempt(
        self,
        worker: Actor,
        names: list[str] | None,
        lease_seconds: int | None,
        start: bool,
        found: list[Claim | None],
        give_up: Callable[[], Awaitable[bool]] | None,
    ) -> Callable[[Unit], Awaitable[Claim | None]]:
        async def attempt(u: Unit) -> Claim | None:
            found.clear()  # a transaction retried after a transient conflict starts over
            started = time.perf_counter()
            claim = await runs.claim_next(u, worker, queues=names, lease_seconds=lease_seconds, start=start)
            self.metrics.claim_latency.observe(time.perf_counter() - started)
            await _unless_gone(give_up, claim is not None)
            found.append(claim)
            return claim

        return attempt

    def _claim_attempt(
        self,
        queue_name: str,
        worker: Actor,
        limit: int,
        lease_seconds: int | None,
        start: bool,
        found: list[int],
        give_up: Callable[[], Awaitable[bool]] | None,
    ) -> Callable[[Unit], Awaitable[list[Claim]]]:
        async def attempt(u: Unit) -> list[Claim]:
            found.clear()  # a transaction retried after a transient conflict starts over
            started = time.perf_counter()
            claims = await runs.claim(u, queue_name, worker, limit, lease_seconds, start=start)
            self.metrics.claim_latency.observe(time.perf_counter() - started)
            await _unless_gone(give_up, bool(claims))
            found.append(len(claims))
            return claims

        return attempt


@dataclass(frozen=True)
class ThenWait:
    """How a call that claims after its own work (a completion's ``claim_next``) goes on when it claimed
    nothing: waiting up to ``seconds`` for up to ``limit`` runs of a queue for a worker — ``at`` (a batch
    completion names both), or the queue and holder of the run ``run_id`` it completed."""

    seconds: float
    limit: int
    lease_seconds: int | None
    at: tuple[str, Actor] | None
    run_id: str | None
    claimed: Callable[[Rendered], bool]  # whether an answer given back under its key holds claims
    adding: Callable[[Rendered, list[Claim]], Rendered]  # the call's answer with the claims its wait brought
    give_up: Callable[[], Awaitable[bool]] | None = None
    start: bool = False  # the claims start their runs (``runs.claim``'s ``start``)


def _more_maybe(handed: list[Claim], waiter: Waiter) -> bool:
    """Whether a claimer that took all it asked for should wake the next one waiting: there may be more
    work. Not when it was handed its runs without a wake-up: their creator offered every run it made and
    woke claimers for the rest itself, so a wake-up passed on would only send a claimer to look at a queue
    with nothing in it (a transaction for nothing, once per task at a steady rate, and that claimer away
    from its offer meanwhile)."""
    return not handed or waiter.signalled


def _keyed(idempotency: IdempotencyKey | None, render: Callable[[list[Claim]], Rendered]) -> KeyedAnswer | None:
    """How a long-poll under an idempotency key is answered when handed its claims (``Handoffs``)."""
    return KeyedAnswer(idempotency, render) if idempotency is not None else None


class _CallerGone(Exception):
    """A long-poll's caller left while its claim was being made: the claim is rolled back."""


async def _unless_gone(give_up: Callable[[], Awaitable[bool]] | None, claimed: bool) -> None:
    """Checked inside the claiming transaction, before it commits: a caller who left between the
    wake-up's check and this transaction (a race a loaded server loses) gets nothing claimed for it."""
    if claimed and give_up is not None and await give_up():
        raise _CallerGone


def _keep_claim(final: bool) -> Callable[[Claim | None], bool]:
    """As ``_keep_claims``, for the single claim of claim-next."""
    return lambda claim: claim is not None or final


def _keep_claims(final: bool) -> Callable[[list[Claim]], bool]:
    """An empty answer is stored under an idempotency key only once the wait is over."""
    return lambda claims: bool(claims) or final


__all__ = ["IdempotencyKey", "ThenWait", "Workloom", "queues", "runs", "tasks"]
