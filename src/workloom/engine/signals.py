"""In-process wake-ups: a waiter registers *before* it looks at the database, so no wake-up is lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from types import TracebackType


class Waiter:
    def __init__(self, signals: Signals, keys: tuple[str, ...], exclusive: bool) -> None:
        self._signals = signals
        self._keys = keys
        self.exclusive = exclusive
        self.idle = False  # inside ``wait``, between its owner's looks at the work
        self.signalled = False  # a wake-up was among what ended the last ``wait``
        self._event = asyncio.Event()
        self._signal = False  # a wake-up came since the last ``wait`` ended

    def __enter__(self) -> Waiter:
        for key in self._keys:
            self._signals._waiters[key][self] = None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for key in self._keys:
            waiters = self._signals._waiters.get(key)
            if waiters is not None:
                waiters.pop(self, None)
                if not waiters:
                    del self._signals._waiters[key]
        if self.exclusive and self._signal:
            # Woken for work it did not come back for (it found enough already, or its caller left):
            # hand the wake-up on, or the work would wait for another claimer's next poll.
            self._signals.pass_on(*self._keys)

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    def fire(self) -> None:
        """A wake-up: there may be work to look for."""
        self._signal = True
        self._event.set()

    def answer(self) -> None:
        """End the wait with no wake-up: the owner was handed what it waited for (``Handoffs``), and owes
        no other claimer a look at the work."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True if woken or answered, False on timeout (``signalled`` says whether a wake-up was among what
        ended it); re-arms so the same waiter can be reused in a loop."""
        self.idle = True
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            self.idle = False
            self._event.clear()
            self.signalled, self._signal = self._signal, False


class Signals:
    """Named wake-up channels (``queue:<id>``, ``work:<workspace>``, ``events:<workspace>``) within one process.

    A key wakes every waiter that watches it, but *exclusive* waiters (claimers) one at a time, the one
    waiting longest first: new work wakes one claimer, not all of them to race for it (ten long-polling
    workers would otherwise run ten claims for every task, nine of them finding nothing). A claimer that
    took all it asked for passes the wake-up on (``pass_on``), so a burst wakes as many as it needs."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, dict[Waiter, None]] = defaultdict(dict)
        self._observers: list[Callable[[Iterable[str]], None]] = []

    def waiter(self, *keys: str, exclusive: bool = False) -> Waiter:
        return Waiter(self, keys, exclusive)

    def observe(self, observer: Callable[[Iterable[str]], None]) -> None:
        """Also hand every batch of keys to ``observer`` (caches that drop what a change made stale)."""
        self._observers.append(observer)

    def notify(self, keys: Iterable[str]) -> None:
        """Wake the waiters of each key (one exclusive waiter per key); ``*`` wakes everyone (e.g. after a
        lost connection)."""
        keys = list(keys)
        for observer in self._observers:
            observer(keys)
        for key in keys:
            if key == "*":
                for waiter in [w for ws in self._waiters.values() for w in ws]:
                    waiter.fire()
                continue
            one = True
            for waiter in list(self._waiters.get(key, ())):
                if not waiter.exclusive:
                    waiter.fire()
                elif one and not waiter.woken:
                    waiter.fire()
                    one = False

    def pass_on(self, *keys: str) -> None:
        """Wake one more exclusive waiter of each key: there may be work left for it."""
        for key in keys:
            for waiter in list(self._waiters.get(key, ())):
                if waiter.exclusive and not waiter.woken:
                    waiter.fire()
                    break

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    @property
    def claimers(self) -> int:
        """Exclusive waiters (long-poll claims) waiting for a wake-up now, not looking at the work nor woken
        to look: each counted once whatever the keys it watches."""
        return len({w for ws in self._waiters.values() for w in ws if w.exclusive and w.idle and not w.woken})


QUEUE_PREFIX = "queue:"


def queue_key(queue_id: str) -> str:
    return QUEUE_PREFIX + queue_id


def work_key(workspace_id: str) -> str:
    """Woken with every queue of the workspace: for claimers that take from any queue."""
    return f"work:{workspace_id}"


def events_key(workspace_id: str) -> str:
    return f"events:{workspace_id}"


QUEUES_CHANGED_PREFIX = "queues:"


def queues_changed_key(workspace_id: str) -> str:
    """Sent when a queue's settings change, so every process drops the queues it keeps of that workspace."""
    return QUEUES_CHANGED_PREFIX + workspace_id
