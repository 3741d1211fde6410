"""Hand-off: a run created while a claimer of its queue waits (long-poll) in this process is claimed for
that claimer inside the creating transaction, and the claimer is answered when that transaction commits.

Without it a task reaches its worker in two transactions: the create commits and wakes the claimer, and
the claimer then runs a claim of its own (BEGIN, the claiming statement, a durable COMMIT). Measured here
at 200 tasks/s, that second transaction was ~2.5 ms of the ~6.5 ms median from create to claim. Handed
off, the claim is part of the create's own commit: the run is written claimed, with the same events a
claim writes (``run.claimed``, ``task.in_progress``), so history cannot tell the two ways apart. Workflow
engines call this a *sync match* (Temporal's matching service hands a task straight to a waiting poller).

Only runs claimable the moment they are created are offered; every other run is claimed as before, by
the claimer its commit wakes. An offer goes first to the claimer that has waited longest, as wake-ups do.

A claimer waiting under an idempotency key (the SDK's worker keys every claim, so that a retried claim
gets the runs the lost answer held) is answered as its own claim would have been: the creating
transaction stores the claimer's answer under its key, beside the claim. It does so only where it may
without waiting: no answer is stored under the key yet (a retry of the claim may have been answered
meanwhile, on this server or another) and, on PostgreSQL, the key's lock is free (a retry may be claiming
under it right now). On SQLite the transaction looks before it takes the offer, and otherwise passes it
over (opened again when the transaction ends). On PostgreSQL the statement that writes the answer takes
the lock and looks itself (migration 0006), so a create stays one statement without BEGIN; if it may not
store the answer it fails, the claimer is told to look again under its key (where it finds the answer
stored, or waits for the retry holding the lock), and the create runs again without handing it anything.
Two offers under one key are never held at once.

Nothing is lost on the way: the claimer learns of a hand-off only once the creating transaction has
committed; if it rolls back the offer is open again. A claimer whose wait ends while a transaction holds
its offer waits for that transaction's outcome before it answers, so a committed claim always reaches it.
A claimer whose caller has left is not handed anything (checked before the claim is made, as a woken
claimer checks before its claim commits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from workloom.domain.actors import Actor
from workloom.domain.models import Claim
from workloom.engine.principal import Principal
from workloom.store import idempotency as idempotency_store
from workloom.store.fast import Write

if TYPE_CHECKING:
    from workloom.engine.unit import IdempotencyKey, Rendered, Unit


@dataclass(frozen=True, slots=True)
class KeyedAnswer:
    """How a claimer waiting under an idempotency key is answered: ``render`` makes its answer from the
    claims handed to it, stored under the key by the transaction that hands them."""

    idempotency: IdempotencyKey
    render: Callable[[list[Claim]], Rendered]


@dataclass(eq=False, slots=True)
class Offer:
    """A waiting claimer's standing offer to take new runs: what a claim of its own would have asked for."""

    principal: Principal
    worker: Actor
    queues: frozenset[str] | None  # queue names; None: any queue of the workspace
    limit: int
    lease_seconds: int | None
    give_up: Callable[[], Awaitable[bool]] | None  # true once its caller has gone
    answer: Callable[[], None]  # ends the claimer's wait once its claims are committed (no wake-up)
    keyed: KeyedAnswer | None = None  # the claimer waits under an idempotency key
    start: bool = False  # the claimer's runs start at once (``runs.claim``'s ``start``)
    state: Literal["open", "held", "done"] = "open"
    withdrawn: bool = False  # the claimer stopped waiting; a held offer is not opened again
    claims: list[Claim] = field(default_factory=list)
    rendered: Rendered | None = None  # a keyed claimer's answer, as stored under its key
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def takes(self, queue_name: str) -> bool:
        return self.queues is None or queue_name in self.queues


class Handoffs:
    """The open offers of this process's waiting claimers, by workspace, in the order they began to wait."""

    def __init__(self) -> None:
        self._open: dict[str, dict[Offer, None]] = {}
        self._keys: dict[tuple[str, str], Offer] = {}  # the keyed offers units hold, by workspace and key hash

    def open(self, offer: Offer) -> Offer:
        self._open.setdefault(offer.principal.workspace_id, {})[offer] = None
        return offer

    async def take(self, u: Unit, queue_name: str) -> Offer | None:
        """An offer for a run of ``queue_name`` that ``u`` creates, held by ``u`` until it commits or not;
        None if no claimer waits for one (or ``u`` already holds every offer that would take it)."""
        while True:
            offer = self._first(u, queue_name)
            if offer is None or offer in u.offers:
                return offer
            self._close(offer)
            offer.state = "held"
            u.offers[offer] = []  # from here on, however ``u`` ends, it settles this offer
            if offer.give_up is not None and await offer.give_up():
                del u.offers[offer]  # its caller left: nothing for it, and its wait ends
                self._finish(offer, [])
                continue
            if offer.keyed is not None and not await self._take_key(u, offer, offer.keyed):
                del u.offers[offer]
                u.passed_over.append(offer)  # opened again when ``u`` ends, not offered to it again
                continue
            return offer

    async def _take_key(self, u: Unit, offer: Offer, keyed: KeyedAnswer) -> bool:
        """Whether ``u`` may answer this keyed offer (see the module's note); if so, the answer is stored
        with the unit's last rows."""
        ident = keyed.idempotency
        held = (u.workspace_id, ident.key_hash)
        if held in self._keys:
            return False
        # On PostgreSQL the statement that writes the answer takes the key's lock and looks for an answer
        # itself, and fails if it may not store one (``settle(key_busy=True)``): no round trip here, and no
        # transaction needed around a create that is otherwise one statement sent without BEGIN.
        if_free = u.connection.dialect.name == "postgresql"
        if not if_free:  # SQLite, whose transactions run one at a time: no lock, only the look
            u.touched = True  # the connection is used, though rows may be held back: this reads none of them
            await u.sent()
            if await idempotency_store.idempotency_get(u.connection, u.workspace_id, ident.key_hash) is not None:
                return False
        self._keys[held] = offer

        def answer() -> Sequence[Write]:
            offer.rendered = keyed.render(u.offers[offer])
            return [ident.stored(u.workspace_id, offer.rendered, u.now, if_free=if_free)]

        u.finish_with(answer)
        return True

    def settle(self, u: Unit, *, committed: bool, key_busy: bool = False) -> None:
        """``u`` ended: the offers it held get their claims (``committed``), or are open again; those it
        passed over are open again. ``key_busy``: it failed because it could not store a keyed claimer's
        answer (its key in use, or answered meanwhile): its keyed offers end with nothing handed, and their
        claimers look again (finding the answer stored, if there is one); run again, ``u`` hands them
        nothing."""
        held, u.offers = u.offers, {}
        passed, u.passed_over = u.passed_over, []
        for offer, claims in held.items():
            if offer.keyed is not None:
                key = (u.workspace_id, offer.keyed.idempotency.key_hash)
                if self._keys.get(key) is offer:
                    del self._keys[key]
            if committed:
                self._finish(offer, claims)
            elif key_busy and offer.keyed is not None:
                offer.rendered = None
                self._finish(offer, [])
            else:
                offer.rendered = None
                self._reopen(offer)
        for offer in passed:
            self._reopen(offer)

    def _reopen(self, offer: Offer) -> None:
        if offer.withdrawn:
            self._finish(offer, [])
        else:
            offer.state = "open"
            self.open(offer)

    async def withdraw(self, offer: Offer) -> list[Claim]:
        """The claimer's wait is over: its offer is closed, and what was handed to it is returned, once
        the transaction holding the offer (if one does) has committed or rolled back."""
        offer.withdrawn = True
        if offer.state == "open":
            self._close(offer)
            offer.state = "done"
        elif offer.state == "held":
            await offer.settled.wait()
        return offer.claims

    def withdraw_now(self, offer: Offer) -> None:
        """``withdraw`` for a claimer that cannot wait (its call was cancelled): a held offer still gets
        its claims if the holder commits, for nobody; their leases run out and the runs go back."""
        offer.withdrawn = True
        if offer.state == "open":
            self._close(offer)
            offer.state = "done"

    @property
    def waiting(self) -> int:
        """Open offers (for tests: a claimer is waiting to be handed work)."""
        return sum(len(offers) for offers in self._open.values())

    def _first(self, u: Unit, queue_name: str) -> Offer | None:
        for offer in self._open.get(u.workspace_id, ()):
            if offer.takes(queue_name):
                return offer
        for offer, claims in u.offers.items():  # held by ``u`` already, with room for more
            if offer.takes(queue_name) and len(claims) < offer.limit:
                return offer
        return None

    def _close(self, offer: Offer) -> None:
        offers = self._open.get(offer.principal.workspace_id)
        if offers is not None:
            offers.pop(offer, None)
            if not offers:
                del self._open[offer.principal.workspace_id]

    @staticmethod
    def _finish(offer: Offer, claims: list[Claim]) -> None:
        offer.state = "done"
        offer.claims = claims
        offer.settled.set()
        offer.answer()
