"""What every create and claim looks up but that rarely changes, kept in the process for a few seconds.

A queue is read by name on each task create and each claim; a round trip (on the claim path, a whole
transaction) for a row that changes a few times a year. Entries live ``QUEUE_TTL_SECONDS`` at most and
are dropped as soon as a queue of their workspace changes: locally after the change commits, and in
other server processes when its wake-up arrives over LISTEN/NOTIFY. The time-to-live bounds the one
window that remains (a read racing a change in another process) and a lost notification.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from workloom.domain.models import Queue, changed
from workloom.engine.signals import QUEUES_CHANGED_PREFIX

QUEUE_TTL_SECONDS = 10.0
MAX_ENTRIES = 10_000


class QueueCache:
    def __init__(self, ttl: float = QUEUE_TTL_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[tuple[str, str], tuple[float, Queue]] = {}

    def get(self, workspace_id: str, name: str) -> Queue | None:
        entry = self._entries.get((workspace_id, name))
        if entry is None:
            return None
        expires, queue = entry
        if self._monotonic() >= expires:
            del self._entries[(workspace_id, name)]
            return None
        return changed(queue)  # a copy: callers may not change what others will read

    def put(self, queue: Queue) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[(queue.workspace_id, queue.name)] = (self._monotonic() + self._ttl, changed(queue))

    def forget(self, workspace_id: str) -> None:
        for key in [k for k in self._entries if k[0] == workspace_id]:
            del self._entries[key]

    def on_keys(self, keys: Iterable[str]) -> None:
        """Wake-up keys, local or from other processes: a queue change drops its workspace's entries."""
        for key in keys:
            if key == "*":  # a lost LISTEN connection: anything may have changed meanwhile
                self._entries.clear()
            elif key.startswith(QUEUES_CHANGED_PREFIX):
                self.forget(key[len(QUEUES_CHANGED_PREFIX) :])
