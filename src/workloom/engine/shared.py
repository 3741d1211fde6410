"""Shared commits: short calls that arrive together run one after another in one transaction and commit once.

Under load a worker's call costs mostly per transaction, not per row: BEGIN, COMMIT and the events'
insert are round trips of their own, and a round trip to PostgreSQL costs both sides CPU whatever the
statement does (~0.3 ms each here). A call that arrives while others are in flight waits for the next
group and shares its transaction: it still runs its own use case on its own ``Unit``, in arrival
order, and its answer is given only after the group has committed, so it is as durable as alone. What
the units of a group hold back and the events they record go in one write at the end. A group starts
as soon as a slot is free, whatever its size: nothing waits for company, so a call on an idle server
costs what it did before.

Each call stays atomic. One that fails without having used the connection wrote nothing: it leaves the
group with its error, and the others commit. One that fails after using it may have written something:
the whole group is rolled back and every call in it runs again in a transaction of its own, exactly as
an ungrouped call would (a transient conflict is retried there too). The group runs its calls in
sequence in one transaction, which is one serial order of them, so a call sees the effects of those
before it as it would have after their commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from workloom.domain.errors import WorkloomError
from workloom.engine.principal import Principal
from workloom.engine.unit import Keyed, Unit, flush_together
from workloom.store.database import is_key_busy
from workloom.store.fast import CommitUnknown

if TYPE_CHECKING:
    from workloom.engine.unit import Runner

T = TypeVar("T")
log = logging.getLogger("workloom.engine")

# A group's calls run one after another; past this many calls, or this many items in all (completions,
# claims: what a call is about), the rest wait for the next group rather than hold the first of them
# back any longer.
MOST_PER_GROUP = 64
MOST_ITEMS_PER_GROUP = 1000
# On PostgreSQL a call about more items than this (a batch of a hundred completions, a claim of fifty) is
# worth a transaction of its own: shared, it would hold back the small calls behind it for no saving.
SMALL = 10


@dataclass(slots=True)
class _Call:
    principal: Principal
    op: Callable[[Unit], Awaitable[Any]]
    done: asyncio.Future[Any]
    items: int


@dataclass(slots=True)
class _Ran:
    call: _Call
    unit: Unit | None  # its own unit, whose refusal (if any) comes after commit; None: in a batch, or refused
    result: Any = None
    error: BaseException | None = None
    committed: bool = True  # False: refused before it used the database, so not part of the commit


class _RollBack(Exception):
    """A call of the group failed after using the connection: nothing of the group may commit."""


class SharedCommits:
    """Runs calls through ``runner`` in shared transactions, at most ``groups`` at once."""

    def __init__(
        self,
        runner: Runner,
        *,
        groups: int,
        most: int = MOST_PER_GROUP,
        on_group: Callable[[int], None] = lambda _size: None,
        any_size: bool = False,
    ) -> None:
        self._runner = runner
        self._any_size = any_size
        self._on_group = on_group
        self._groups = groups
        self._most = most
        self._waiting: list[_Call] = []
        self._open = 0
        self._drainers: set[asyncio.Task[None]] = set()
        self.grouped = 0  # calls that committed in a group of more than one (for tests and metrics)

    def takes(self, items: int) -> bool:
        """Whether a call about ``items`` items shares a commit: a small one always. ``any_size`` (SQLite,
        whose one connection every transaction waits for in turn): a large one too, which holds nothing
        back by it, and saves its own COMMIT (an fsync) and the connection's hand-over between
        transactions (a drain of batches of a hundred: ~+18 % here)."""
        return self._any_size or items <= SMALL

    async def run(self, principal: Principal, op: Callable[[Unit], Awaitable[T]], items: int = 1) -> T:
        loop = asyncio.get_running_loop()
        call = _Call(principal, op, loop.create_future(), items)
        self._waiting.append(call)
        if self._open < self._groups:
            self._open += 1
            drainer = loop.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        result: T = await call.done
        return result

    async def close(self) -> None:
        for drainer in list(self._drainers):
            drainer.cancel()
        for call in self._waiting:
            call.done.cancel()
        self._waiting.clear()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._next_group()
                if not group:
                    continue  # their callers left before their turn
                try:
                    await self._commit(group)
                except BaseException:
                    for call in group:
                        if not call.done.done():
                            call.done.cancel()
                    raise
        finally:
            self._open -= 1

    def _next_group(self) -> list[_Call]:
        """The calls waiting longest, up to the group's most calls and items (its first call whatever its
        size); those whose callers have left are dropped. A call under a key already in the group waits for
        the next one: in one transaction it would not find the first one's answer, which is stored at the
        end, and would be done again (or refused where the first has done it)."""
        group: list[_Call] = []
        later: list[_Call] = []
        keys: set[tuple[str, str]] = set()
        seen = items = 0
        for call in self._waiting[: self._most]:
            if group and items + call.items > MOST_ITEMS_PER_GROUP:
                break
            seen += 1
            key = _key_of(call)
            if key in keys:
                later.append(call)
                continue
            if key is not None:
                keys.add(key)
            group.append(call)
            items += call.items
        self._waiting[:seen] = later
        return [call for call in group if not call.done.done()]

    async def _commit(self, group: list[_Call]) -> None:
        if len(group) == 1:
            await self._alone(group[0])
            return
        try:
            ran, units = await self._together(group)
        except CommitUnknown as exc:
            # It may have committed: run again, its calls could be done twice. Each is told (``Runner.run``:
            # OutcomeUnknown; one under an idempotency key runs again, and finds its answer if it committed).
            for call in group:
                _settle(call, None, exc)
            return
        except Exception as exc:
            if not isinstance(exc, _RollBack):
                log.info("a shared commit failed; its calls run again one by one", extra={"error": type(exc).__name__})
            await asyncio.gather(*(self._alone(call) for call in group))
            return
        self._runner.after_commit_together(units)
        committed = sum(r.committed for r in ran)
        self.grouped += committed
        self._on_group(committed)
        for r in ran:
            error = r.error or (r.unit.deferred_error if r.unit is not None else None)
            _settle(r.call, r.result, error)

    async def _together(self, group: list[_Call]) -> tuple[list[_Ran], list[Unit]]:
        runner = self._runner
        ran: list[_Ran] = []
        units: list[Unit] = []
        made: list[Unit] = []
        try:
            await self._run_group(group, ran, units, made)
        except BaseException as exc:
            busy = is_key_busy(exc)
            for unit in made:
                runner.handoffs.settle(unit, committed=False, key_busy=busy)
            raise
        committed = {id(unit) for unit in units}
        for unit in made:
            if id(unit) not in committed:  # refused: it wrote nothing, so it handed nothing over
                runner.handoffs.settle(unit, committed=False)
        return ran, units

    async def _run_group(self, group: list[_Call], ran: list[_Ran], units: list[Unit], made: list[Unit]) -> None:
        runner = self._runner
        async with runner.db.transaction() as conn:
            for calls in _batches(group):
                unit = runner.unit(conn, calls[0].principal)
                made.append(unit)
                if len(calls) > 1:
                    ran.extend(await _each(unit, calls))
                    units.append(unit)
                    continue
                call = calls[0]
                try:
                    ran.append(_Ran(call, unit, await call.op(unit)))
                except Exception as exc:
                    if unit.touched or not isinstance(exc, WorkloomError):
                        raise _RollBack from exc
                    ran.append(_Ran(call, None, error=exc, committed=False))
                    continue
                units.append(unit)
            await flush_together(units, final=True)

    async def _alone(self, call: _Call) -> None:
        if call.done.done():
            return
        try:
            result = await self._runner.run(call.principal, call.op)
        except Exception as exc:
            _settle(call, None, exc)
        else:
            _settle(call, result, None)


class Each(Protocol):
    """A call that can run together with others of its kind as one use case: ``each`` gives every item what
    it would have had alone, its result or its refusal (a refusal's writes, such as a late result kept,
    committed all the same). It must not raise for one item's sake, nor leave a refusal for after commit."""

    @staticmethod
    async def each(u: Unit, items: list[Any]) -> list[Any]: ...


def _batches(group: list[_Call]) -> list[list[_Call]]:
    """The group's calls in the order they came, those of one kind (``Each``) by one caller taken together
    where the first of them came."""
    out: list[list[_Call]] = []
    together: dict[tuple[object, Principal], list[_Call]] = {}
    for call in group:
        kind = _together_as(call.op)
        if kind is None:
            out.append([call])
            continue
        key = (kind, call.principal)
        if key in together:
            together[key].append(call)
        else:
            together[key] = [call]
            out.append(together[key])
    return out


def _key_of(call: _Call) -> tuple[str, str] | None:
    """The workspace and idempotency key a call runs under, if any."""
    op = call.op
    return (call.principal.workspace_id, op.ident.key_hash) if isinstance(op, Keyed) else None


def _together_as(op: object) -> object | None:
    """What calls are taken together as: their type, when it can be (``Each``), or what a call that wraps
    another says (``Keyed``: keyed calls of one kind); None, alone."""
    if hasattr(op, "together_as"):
        declared: object | None = op.together_as
        return declared
    kind = type(op)
    return kind if hasattr(kind, "each") else None


async def _each(unit: Unit, calls: list[_Call]) -> list[_Ran]:
    kind: Any = type(calls[0].op)
    try:
        outcomes = await kind.each(unit, [call.op for call in calls])
    except Exception as exc:
        raise _RollBack from exc
    if unit.deferred_error is not None or len(outcomes) != len(calls):
        raise _RollBack  # not what ``Each`` promises: take no chances with it
    return [
        _Ran(call, None, error=outcome) if isinstance(outcome, WorkloomError) else _Ran(call, None, result=outcome)
        for call, outcome in zip(calls, outcomes, strict=True)
    ]


def _settle(call: _Call, result: Any, error: BaseException | None) -> None:
    if call.done.done():
        return  # the caller left; what it asked for was done (or refused) all the same
    if error is not None:
        call.done.set_exception(error)
    else:
        call.done.set_result(result)
