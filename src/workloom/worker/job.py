"""``Job``: what a handler receives — the claimed task and run, progress and usage reporting, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from datetime import datetime
from typing import Any, TypeVar

from workloom.client import AsyncClient, Claim, Run, Task
from workloom.worker.errors import JobCancelled

T = TypeVar("T")


class JobState(enum.Enum):
    RUNNING = "running"
    LOST = "lost"  # the lease is no longer ours: whatever the handler produces is dropped
    ABANDONED = "abandoned"  # the worker gave up on it at shutdown (and released the run)


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds the job's fields (worker, queue, task, run, attempt) to every record, merged
    with the call's own ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class Reported:
    """What ``Job.progress()`` and ``Job.usage()`` return. Not awaited, the report rides on the next
    heartbeat; awaited (in an async handler), a heartbeat carrying it is sent now and awaited."""

    __slots__ = ("_job", "_version")

    def __init__(self, job: Job, version: int) -> None:
        self._job = job
        self._version = version

    def __await__(self) -> Generator[Any, None, None]:
        return self._job._flushed(self._version).__await__()


class Job:
    """One claimed task being handled.

    Attributes for the handler: ``task`` and ``run`` (SDK models), ``data`` (the task's input), ``queue``,
    ``attempt`` (1 for the first), ``lease_until`` (renewed by heartbeats), ``client`` (the worker's
    ``AsyncClient``, e.g. to create follow-up tasks), ``cancelled`` (a ``threading.Event`` set when the job
    must stop: lease lost or shutdown past the grace period; ``cancel_reason`` says which), ``log`` (a logger
    that tags records with the job).

    The claim token stays inside the worker: it is never logged nor shown by ``repr``.
    """

    def __init__(
        self,
        claim: Claim,
        *,
        client: AsyncClient,
        worker: str,
        lease_seconds: float,
        logger: logging.Logger,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.task: Task = claim.task
        self.run: Run = claim.run
        self.lease_until: datetime = claim.lease_until
        self.client = client
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.cancel_reason: str | None = None
        self._logger = logger
        self._log: JobLog | None = None
        self._cancelled: threading.Event | None = None
        self._token = claim.claim_token
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()  # cheap (unlike an Event's Condition), and guards the lazy Event too
        self._state = JobState.RUNNING
        self._version = 0
        self._sent_version = 0
        self._progress: Any = None
        self._progress_version = 0
        self._usage: dict[str, Any] = {}
        self._usage_version = 0
        # Awaited reports not yet on the server (each version newer than ``_sent_version``), on the loop only.
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Called (on the loop) when there is something new to send; the worker sets it while it heartbeats.
        self._on_report: Callable[[], None] | None = None
        self._handler_task: asyncio.Task[Any] | None = None  # the task running the async handler, while it runs
        self._handler_cancelled = False  # ``stop`` cancelled that task
        self._finished = False

    # -- what the handler reads ---------------------------------------------------------------------------

    @property
    def cancelled(self) -> threading.Event:
        """Set when the job must stop (lease lost, or shutdown past the grace period)."""
        # Made on first use: most jobs never look, and an Event (a Condition and its lock, in Python) costs
        # about as much as the rest of a Job. Made under the lock so that a handler's thread and ``stop`` on
        # the loop share one Event.
        event = self._cancelled
        if event is None:
            with self._lock:
                event = self._cancelled
                if event is None:
                    event = self._cancelled = threading.Event()
                    if self._state is not JobState.RUNNING:
                        event.set()
        return event

    @property
    def log(self) -> JobLog:
        """A logger that tags records with the job's fields."""
        if self._log is None:  # a race makes two equal adapters, which is harmless
            self._log = JobLog(self._logger, self.log_fields())
        return self._log

    @log.setter
    def log(self, value: JobLog) -> None:
        self._log = value

    @property
    def data(self) -> Any:
        """The task's input (``task.data``)."""
        return self.task.data

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def queue(self) -> str:
        return self.run.queue or self.task.queue or ""

    @property
    def attempt(self) -> int:
        return self.run.attempt

    def log_fields(self) -> dict[str, Any]:
        """The fields every log line about this job carries (never the claim token)."""
        return {
            "worker": self.worker,
            "queue": self.queue,
            "task_id": self.task.id,
            "task": self.task.identifier,
            "run_id": self.run.id,
            "attempt": self.run.attempt,
        }

    def __repr__(self) -> str:
        return f"<Job {self.task.identifier or self.task.id} run={self.run.id} attempt={self.run.attempt}>"

    # -- reporting ------------------------------------------------------------------------------------------

    def progress(self, value: Any) -> Reported:
        """Report progress (any JSON value, e.g. ``{"step": 2, "of": 5}``); it shows in the run's ``progress``.

        Sent with the next heartbeat (within the worker's ``progress_interval``); ``await job.progress(...)``
        sends it now. Safe to call from a sync handler's thread.
        """
        if value is None:
            raise ValueError("progress cannot be None")
        with self._lock:
            self._version += 1
            self._progress = value
            self._progress_version = self._version
            version = self._version
        self._changed()
        return Reported(self, version)

    def usage(self, tokens: float | None = None, cost: float | None = None, **counters: float) -> Reported:
        """Add to the run's usage totals, e.g. ``job.usage(tokens=812, cost=0.0031)`` after each model call.

        Totals (not increments) go to the server with the next heartbeat and with the result, and show in
        the run's ``usage``. Safe to call from a sync handler's thread.
        """
        added = {"tokens": tokens, "cost": cost, **counters}
        with self._lock:
            for name, amount in added.items():
                if amount is None:
                    continue
                if isinstance(amount, bool) or not isinstance(amount, int | float):
                    raise TypeError(f"usage {name} must be a number, not {amount!r}")
                self._usage[name] = self._usage.get(name, 0) + amount
            self._version += 1
            self._usage_version = self._version
            version = self._version
        self._changed()
        return Reported(self, version)

    @property
    def usage_totals(self) -> dict[str, Any]:
        """The usage reported so far, summed."""
        with self._lock:
            return dict(self._usage)

    # -- cancellation ---------------------------------------------------------------------------------------

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the job must stop (for sync handlers, between steps of their work)."""
        if self.cancelled.is_set():
            raise JobCancelled(self.cancel_reason or "cancelled")

    def run_async(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """From a sync handler's thread: run ``awaitable`` (e.g. ``job.client.get_task(...)``) on the worker's
        event loop and return its result."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("run_async is for sync handlers; in an async handler, await the call")

        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout)

    # -- for the worker ---------------------------------------------------------------------------------------

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def claim_token(self) -> str:
        return self._token

    def _changed(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._notify()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        on_report = self._on_report
        if on_report is not None:
            on_report()

    def dirty(self, *, usage: bool = True) -> bool:
        """Whether something reported has not reached the server yet."""
        with self._lock:
            pending = self._progress_version > self._sent_version
            if usage:
                pending = pending or self._usage_version > self._sent_version
            return pending

    def take_report(self) -> tuple[int, Any, dict[str, Any] | None]:
        """The version, progress and usage totals to send (``None`` for what has not changed since sent)."""
        with self._lock:
            progress = self._progress if self._progress_version > self._sent_version else None
            usage = dict(self._usage) if self._usage_version > self._sent_version else None
            return self._version, progress, usage

    def reported(self, version: int, lease_until: datetime | None) -> None:
        """A heartbeat carrying ``version`` succeeded."""
        with self._lock:
            self._sent_version = max(self._sent_version, version)
            sent = self._sent_version
        if lease_until is not None:
            self.lease_until = lease_until
        self._resolve(lambda v: v <= sent)

    def flush_wanted(self) -> bool:
        """Whether the handler awaits a report that no answered heartbeat has carried yet.

        Derived from the waiters rather than kept as a flag: an awaited report made while a heartbeat is in
        flight is newer than what that heartbeat carries, and must still be wanted once its answer comes."""
        # A waiter whose await was cancelled wants nothing; it stays listed until its version is sent.
        return any(not future.done() for _, future in self._flush_waiters)

    async def _flushed(self, version: int) -> None:
        with self._lock:
            if self._sent_version >= version:
                return
        if self._state is not JobState.RUNNING or self._finished:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._flush_waiters.append((version, future))
        self._notify()
        await future

    def _resolve(self, which: Callable[[int], bool]) -> None:
        keep = []
        for version, future in self._flush_waiters:
            if which(version):
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((version, future))
        self._flush_waiters = keep

    def finish(self) -> None:
        """The job is over: nobody waits for a report any more."""
        self._finished = True
        self._resolve(lambda _v: True)

    def stop(self, state: JobState, reason: str) -> bool:
        """Mark the job lost or abandoned and cancel the handler; False if it already was."""
        if self._state is not JobState.RUNNING:
            return False
        self._state = state
        self.cancel_reason = reason
        with self._lock:
            event = self._cancelled
        if event is not None:  # else it is made set, should anyone ask
            event.set()
        if self._handler_task is not None and not self._handler_task.done():
            self._handler_task.cancel(reason)
            self._handler_cancelled = True
        self._resolve(lambda _v: True)
        return True
