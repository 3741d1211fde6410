"""``Timetable``: one timer for many keys, each due at its own time (the worker's heartbeat schedule)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Timetable(Generic[K]):
    """Calls ``due(key)`` once ``key``'s time (``loop.time()`` seconds) has come, from a single timer handle.

    A per-key task or timer would cost every job a task, a timeout and their cancellation even when it ends
    long before its first heartbeat; here a key costs a few dict operations. Keys due at one time (heartbeats
    fall due on a grid) share a slot and are called together, in the order they were put there.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, due: Callable[[K], None]) -> None:
        self._loop = loop
        self._due = due
        self._when: dict[K, float] = {}
        self._slots: dict[float, dict[K, None]] = {}  # dicts as ordered sets
        self._times: list[float] = []  # a heap of slot times; a time whose slot emptied is skipped when reached
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def set(self, key: K, when: float) -> None:
        """(Re)schedule ``key`` for ``when``."""
        before = self._when.get(key)
        if before == when:
            return
        if before is not None:
            self._leave(key, before)
        self._when[key] = when
        slot = self._slots.get(when)
        if slot is None:
            slot = self._slots[when] = {}
            heapq.heappush(self._times, when)
        slot[key] = None
        if self._timer is None or when < self._timer.when():
            self._arm(when)

    def drop(self, key: K) -> None:
        """Unschedule ``key`` (nothing if it is not scheduled)."""
        when = self._when.pop(key, None)
        if when is not None:
            self._leave(key, when)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._when.clear()
        self._slots.clear()
        self._times.clear()

    def _leave(self, key: K, when: float) -> None:
        slot = self._slots[when]
        del slot[key]
        if not slot:
            del self._slots[when]  # its heap entry stays until reached (removing it would cost a heap rebuild)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._times and self._times[0] <= now:
            slot = self._slots.pop(heapq.heappop(self._times), None)
            for key in slot or ():
                del self._when[key]
            for key in slot or ():
                try:
                    self._due(key)  # may schedule the key again
                except Exception as exc:  # one key's failure must not leave the others unscheduled
                    self._loop.call_exception_handler({"message": "timetable callback failed", "exception": exc})
        while self._times and self._times[0] not in self._slots:
            heapq.heappop(self._times)
        if self._times and (self._timer is None or self._times[0] < self._timer.when()):
            self._arm(self._times[0])
