"""In-process wake-ups: a waiter registers *before* it looks at the database, so no wake-up is lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from types import TracebackType


class Waiter:
    def __init__(self, signals: Signals, keys: tuple[str, ...]) -> None:
        self._signals = signals
        self._keys = keys
        self._event = asyncio.Event()

    def __enter__(self) -> Waiter:
        for key in self._keys:
            self._signals._waiters[key].add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for key in self._keys:
            waiters = self._signals._waiters.get(key)
            if waiters is not None:
                waiters.discard(self)
                if not waiters:
                    del self._signals._waiters[key]

    def fire(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True if woken, False on timeout; re-arms so the same waiter can be reused in a loop."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


class Signals:
    """Named wake-up channels (``queue:<id>``, ``work:<workspace>``, ``events:<workspace>``) within one process."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[Waiter]] = defaultdict(set)
        self._observers: list[Callable[[Iterable[str]], None]] = []

    def waiter(self, *keys: str) -> Waiter:
        return Waiter(self, keys)

    def observe(self, observer: Callable[[Iterable[str]], None]) -> None:
        """Also hand every batch of keys to ``observer`` (caches that drop what a change made stale)."""
        self._observers.append(observer)

    def notify(self, keys: Iterable[str]) -> None:
        """Wake the waiters of each key; ``*`` wakes everyone (e.g. after a lost connection)."""
        keys = list(keys)
        for observer in self._observers:
            observer(keys)
        for key in keys:
            targets = [w for ws in self._waiters.values() for w in ws] if key == "*" else self._waiters.get(key, ())
            for waiter in list(targets):
                waiter.fire()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())


def queue_key(queue_id: str) -> str:
    return f"queue:{queue_id}"


def work_key(workspace_id: str) -> str:
    """Woken with every queue of the workspace: for claimers that take from any queue."""
    return f"work:{workspace_id}"


def events_key(workspace_id: str) -> str:
    return f"events:{workspace_id}"


QUEUES_CHANGED_PREFIX = "queues:"


def queues_changed_key(workspace_id: str) -> str:
    """Sent when a queue's settings change, so every process drops the queues it keeps of that workspace."""
    return QUEUES_CHANGED_PREFIX + workspace_id
