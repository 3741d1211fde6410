"""Queues this process has just seen empty: a long-poll claim may then wait at once instead of looking first.

A worker's loop is: claim (long-poll), work, complete (claiming the next in the same call), and when the
completion found nothing next, claim again. That claim's first look at the queue is a transaction (three
round trips on PostgreSQL) that finds nothing, since the completion found nothing an instant ago. So a
claim or completion that finds a queue with nothing more to claim notes it here, and a long-poll claim
arriving while the note holds skips its first look and waits for a wake-up.

A note holds until any wake-up of the queue arrives (an enqueue, here or from another process by
NOTIFY, a fired timer, ``*`` after a lost LISTEN connection) and for at most ``HOLD_SECONDS``, so work
that became claimable with no wake-up (a retry's backoff running out between ticks) waits no longer than
a waiting claimer's poll would leave it. A note is taken only if no wake-up of the queue came since the
transaction that saw it empty began: a create that commits meanwhile makes it void. The note can be
stale only by a wake-up still on its way from another process; the claim then waits for it to arrive,
which a claim that looked first would have found a few milliseconds sooner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from workloom.engine.signals import QUEUE_PREFIX

HOLD_SECONDS = 1.0


class EmptyQueues:
    def __init__(self, hold_seconds: float = HOLD_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._hold = hold_seconds
        self._monotonic = monotonic
        self._tick = 0  # counts wake-up batches
        self._woken: dict[str, int] = {}  # queue id -> the tick of its last wake-up
        self._everything_woken = 0  # the tick of the last ``*``
        self._seen: dict[str, tuple[int, float]] = {}  # queue id -> (seen empty as of this tick, when)

    def now(self) -> int:
        """A mark to take when a transaction begins, for ``seen_empty``."""
        return self._tick

    def seen_empty(self, queue_id: str, since: int) -> None:
        """A transaction that began at ``since`` (``now``) found nothing more to claim in the queue."""
        if self._everything_woken <= since and self._woken.get(queue_id, 0) <= since:
            self._seen[queue_id] = (since, self._monotonic())

    def is_empty(self, queue_id: str) -> bool:
        seen = self._seen.get(queue_id)
        if seen is None:
            return False
        since, at = seen
        if self._woken.get(queue_id, 0) > since or self._monotonic() - at > self._hold:
            del self._seen[queue_id]
            return False
        return True

    def on_keys(self, keys: Iterable[str]) -> None:
        """A ``Signals`` observer: every wake-up of a queue (or of everything) voids what was seen of it."""
        self._tick += 1
        for key in keys:
            if key.startswith(QUEUE_PREFIX):
                queue_id = key[len(QUEUE_PREFIX) :]
                self._woken[queue_id] = self._tick
                self._seen.pop(queue_id, None)
            elif key == "*":
                self._everything_woken = self._tick
                self._seen.clear()
