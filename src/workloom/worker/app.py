"""``Worker``: declare handlers per queue, then ``run()`` — claims, heartbeats, outcomes and shutdown are handled.

    from workloom.worker import Job, NonRetryableError, Worker

    app = Worker(name="summariser", concurrency=8)

    @app.handler("summaries")
    async def summarise(job: Job) -> dict:
        await job.progress({"step": "fetching"})
        ...
        job.usage(tokens=812, cost=0.0031)
        return {"summary": text}          # completes the run; an exception fails it

    if __name__ == "__main__":
        app.run()                        # or: workloom worker mymodule:app

How it runs: one claim loop per queue asks for as many runs as there are free slots (``concurrency`` is
shared by every queue; a handler may cap its own share), long-polling ``wait_seconds`` when the queue is
empty; on a busy queue, the completions of finished jobs (sent together) claim the next runs for the slots
they free, in the same request. Each run is claimed running (``claim(start=True)``), handled (async
handlers in the job's asyncio task, sync ones in their own thread) and heartbeated every third of its
lease, carrying the progress and usage the handler reported; the heartbeats due together (a grid of a
quarter of that third, kept by one timetable for all the jobs) are one request. A heartbeat refused
because the lease is gone (the task was canceled, or the lease ran out and someone else has the task)
cancels the handler: an async handler gets ``CancelledError``, a sync one sees ``job.cancelled`` set, and
what either produces afterwards is dropped. A return value completes the run; ``Release`` gives the task
back; any other exception fails the run, retryable unless it is a ``NonRetryableError`` or the
``retryable`` predicate says no. SIGTERM or SIGINT stops claiming and lets in-flight jobs finish for
``grace_period`` seconds; jobs still running then are cancelled and released, and ``run()`` returns (a
second signal skips the wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic_core import to_jsonable_python

from workloom.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Claim,
    NotFoundError,
    PermissionDeniedError,
    RunOutcome,
    StaleClaimError,
    ValidationError,
    WorkloomError,
)
from workloom.worker.errors import NonRetryableError, Release, default_retryable
from workloom.worker.job import Job, JobState
from workloom.worker.logs import configure_logging
from workloom.worker.timetable import Timetable

F = TypeVar("F", bound=Callable[..., Any])
Retryable = Callable[[BaseException], bool]

MAX_BATCH = 100  # the server's claim limit
MAX_WAIT_SECONDS = 30.0  # the server's long-poll limit
IDLE_PAUSE = 1.0  # between claims that found nothing, when not long-polling
MAX_BACKOFF = 30.0
ERROR_LIMIT = 20_000  # the server's limit on a failure's error text
RELEASE_TIMEOUT = 10.0
CLAIM_RETURN_MARGIN = 5.0  # beyond wait_seconds, for a claim's answer to arrive at shutdown
CLAIM_LINGER = 0.05  # a busy queue waits this long for more free slots, to claim them in one request
SHUTDOWN_REASON = "worker shutting down"

log = logging.getLogger("workloom.worker")


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the queue it serves and how it claims."""

    queue: str
    fn: Callable[[Job], Any]
    is_async: bool
    lease_seconds: int | None = None
    batch: int = MAX_BATCH
    concurrency: int | None = None
    retryable: Retryable | None = None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


class Worker:
    """A set of handlers, one per queue, and the settings they run with.

    ``client``: an ``AsyncClient`` (default: one made at start from ``WORKLOOM_URL`` / ``WORKLOOM_API_KEY``).
    ``name``: how the worker appears in runs' ``claimed_by`` (as ``name@host:pid``) and in logs.
    ``kind``: the actor kind claims are made as (``automation``, or ``agent_session`` for an AI agent).
    ``concurrency``: jobs handled at once, shared by every queue. ``wait_seconds``: how long a claim waits
    on an empty queue (long-poll, up to 30). ``grace_period``: seconds in-flight jobs get to finish at
    shutdown. ``retryable``: decides whether an exception (other than ``NonRetryableError``) deserves
    another attempt; default yes. ``progress_interval``: the least time between heartbeats sent early
    because the handler reported progress or usage. ``start_runs``: mark each run ``running`` before its
    handler is called (claimed running, ``claim(start=True)``; against an older server, the runs of one claim
    started in one ``start_runs`` request). ``batch_complete``:
    completions of jobs that finish within a few milliseconds of each other (or up to ``COMPLETE_BATCH`` of
    them) are sent as one ``complete_runs`` request, one server transaction; each run is still completed
    or refused on its own.
    """

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        name: str = "worker",
        kind: str = "automation",
        concurrency: int = 8,
        wait_seconds: float = 10.0,
        grace_period: float = 30.0,
        retryable: Retryable | None = None,
        progress_interval: float = 1.0,
        start_runs: bool = True,
        logger: logging.Logger | None = None,
        batch_complete: bool = True,
    ) -> None:
        self.client = client
        self.name = name
        self.kind = kind
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self.grace_period = grace_period
        self.retryable = retryable
        self.progress_interval = progress_interval
        self.start_runs = start_runs
        self.batch_complete = batch_complete
        self.log = logger or log
        self.handlers: dict[str, Handler] = {}
        self._runtime: _Runtime | None = None
        self._stop_early = False  # stop() came before serve() got going
        self._check()

    def _check(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= self.wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS:g}")
        if self.grace_period < 0:
            raise ValueError("grace_period must be 0 or more")

    def configure(
        self,
        *,
        concurrency: int | None = None,
        wait_seconds: float | None = None,
        grace_period: float | None = None,
        name: str | None = None,
    ) -> None:
        """Override settings (the CLI's options) before the worker starts."""
        if concurrency is not None:
            self.concurrency = concurrency
        if wait_seconds is not None:
            self.wait_seconds = wait_seconds
        if grace_period is not None:
            self.grace_period = grace_period
        if name is not None:
            self.name = name
        self._check()

    @property
    def actor(self) -> dict[str, str]:
        """Who this worker claims as: ``{"kind": kind, "ref": "name@host:pid"}``."""
        return {"kind": self.kind, "ref": f"{self.name}@{socket.gethostname()}:{os.getpid()}"}

    # -- declaring handlers ---------------------------------------------------------------------------------

    def handler(
        self,
        queue: str,
        *,
        lease_seconds: int | None = None,
        batch: int | None = None,
        concurrency: int | None = None,
        retryable: Retryable | None = None,
    ) -> Callable[[F], F]:
        """Handle the tasks of ``queue`` with the decorated function (sync or async, taking a ``Job``).

        ``lease_seconds``: the lease to claim with and renew (default: the queue's). ``batch``: the most runs
        one claim asks for (default 100, never more than the free slots). ``concurrency``: the most jobs of
        this queue at once (within the worker's own limit). ``retryable``: this handler's failure classifier.
        """

        def register(fn: F) -> F:
            self.add_handler(
                queue, fn, lease_seconds=lease_seconds, batch=batch, concurrency=concurrency, retryable=retryable
            )
            return fn

        return register

    def add_handler(
        self,
        queue: str,
        fn: Callable[[Job], Any],
        *,
        lease_seconds: int | None = None,
        batch: int | None = None,
        concurrency: int | None = None,
        retryable: Retryable | None = None,
    ) -> Handler:
        """``handler`` without the decorator."""
        if not queue:
            raise ValueError("a handler needs a queue name")
        if queue in self.handlers:
            raise ValueError(f"queue {queue!r} already has a handler ({self.handlers[queue].name})")
        if not callable(fn):
            raise TypeError(f"handler for {queue!r} must be callable, not {fn!r}")
        if lease_seconds is not None and not 1 <= lease_seconds <= 86_400:
            raise ValueError("lease_seconds must be between 1 and 86400")
        if batch is not None and not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be between 1 and {MAX_BATCH}")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        handler = Handler(
            queue=queue,
            fn=fn,
            is_async=_is_async(fn),
            lease_seconds=lease_seconds,
            batch=batch or MAX_BATCH,
            concurrency=concurrency,
            retryable=retryable,
        )
        self.handlers[queue] = handler
        return handler

    # -- running --------------------------------------------------------------------------------------------

    def run(self, *, configure_logs: bool = True) -> None:
        """Serve until SIGTERM/SIGINT, then shut down gracefully and return. Logs go to stderr as JSON lines
        unless logging was configured already (or ``configure_logs`` is false)."""
        if configure_logs and not logging.getLogger().handlers:
            configure_logging()
        asyncio.run(self.serve())

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Serve until ``stop()`` (or SIGTERM/SIGINT when ``handle_signals`` and on the main thread), then
        shut down gracefully. Raises ``AuthenticationError`` / ``PermissionDeniedError`` if the key cannot claim,
        ``ValidationError`` if the server refuses the claim's settings (e.g. the worker's ``kind``)."""
        if not self.handlers:
            raise RuntimeError("the worker has no handlers: declare one with @worker.handler('queue')")
        if self._runtime is not None:
            raise RuntimeError("the worker is already running")
        actor = self.actor
        client = self.client or AsyncClient(worker=actor)
        runtime = _Runtime(self, client, actor)
        self._runtime = runtime
        if self._stop_early:
            self._stop_early = False
            runtime.request_stop()
        signals = runtime.install_signals() if handle_signals else []
        try:
            await runtime.main()
        finally:
            for sig in signals:
                runtime.loop.remove_signal_handler(sig)
            self._runtime = None
            if self.client is None:
                await client.aclose()

    def stop(self) -> None:
        """Begin a graceful shutdown (from any thread): stop claiming, let in-flight jobs finish. Called just
        before ``serve()`` starts, it makes that ``serve()`` return at once."""
        runtime = self._runtime
        if runtime is not None:
            runtime.call(runtime.request_stop)
        else:
            self._stop_early = True

    @property
    def running_jobs(self) -> list[Job]:
        """The jobs being handled right now."""
        runtime = self._runtime
        return [] if runtime is None else [t.job for t in runtime.jobs.values()]


@dataclass
class _Outcome:
    kind: Literal["result", "error", "cancelled"]
    value: Any = None
    error: BaseException | None = None


@dataclass(eq=False)  # compared and hashed by identity: a key of the heartbeat timetable
class _Tracked:
    """A job and its lease as this worker sees it (``loop.time()`` seconds)."""

    job: Job
    handler: Handler
    last_beat: float
    deadline: float  # the lease surely ran out by then unless renewed
    interval: float  # between heartbeats
    pacing: bool = False  # its handler runs: heartbeats are due
    beating: asyncio.Task[None] | None = None  # a heartbeat in flight
    retry_at: float | None = None  # the last heartbeat failed: the next is sent then, and not sooner


@dataclass
class _HandlerState:
    active: int = 0  # reserved or running slots
    idle: bool = False  # the last claim found nothing
    busy: bool = False  # the last claim got all it asked for


@dataclass
class _Tally:
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class _Runtime:
    """One ``serve()``: the slots, the claim loops, the jobs in flight and the shutdown."""

    def __init__(self, worker: Worker, client: AsyncClient, actor: dict[str, str]) -> None:
        self.worker = worker
        self.client = client
        self.actor = actor
        self.log = worker.log
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.used = 0
        self.states = {queue: _HandlerState() for queue in worker.handlers}
        self.jobs: dict[asyncio.Task[None], _Tracked] = {}
        self.side: set[asyncio.Task[None]] = set()
        self.tally = _Tally()
        self.fields = {"worker": actor["ref"]}
        # Per queue: a batch's completion claims that queue's next runs for the slots it frees.
        self.completers: dict[str, _Batched[tuple[str, str, Any]]] = {
            h.queue: _Batched(functools.partial(self.complete_and_claim, h), COMPLETE_DELAY, COMPLETE_BATCH)
            for h in worker.handlers.values()
            if worker.batch_complete
        }
        # With ``start_runs`` the runs are claimed running (``claim(start=True)``); a server that cannot (older
        # than this SDK) has them started after each claim, the runs of one claim in one request.
        self.claims_start = worker.start_runs
        self.starter: _Batched[tuple[str, str]] = _Batched(client.start_runs, 0.0, START_BATCH)
        self.beats: _Batched[dict[str, Any]] = _Batched(client.heartbeat_runs, BEAT_DELAY, BEAT_BATCH)
        self.timetable: Timetable[_Tracked] = Timetable(self.loop, self.pace)

    # -- control ----------------------------------------------------------------------------------------------

    def call(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self.thread:
            fn()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
                self.loop.call_soon_threadsafe(fn)

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self.slot_freed.set()

    def install_signals(self) -> list[signal.Signals]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
        return installed

    def on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            self.log.info(
                f"{sig.name}: shutting down; in-flight jobs have {self.worker.grace_period:g}s to finish",
                extra={**self.fields, "signal": sig.name, "in_flight": len(self.jobs)},
            )
            self.request_stop()
        else:
            self.log.warning(
                f"{sig.name} again: releasing in-flight jobs now",
                extra={**self.fields, "signal": sig.name, "in_flight": len(self.jobs)},
            )
            self.forced.set()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when shutdown begins."""
        await wait_event(self.stopping, seconds)

    # -- main -------------------------------------------------------------------------------------------------

    async def main(self) -> None:
        w = self.worker
        self.log.info(
            "worker started",
            extra={
                **self.fields,
                "queues": list(w.handlers),
                "concurrency": w.concurrency,
                "url": self.client.base_url,
            },
        )
        claimers = [
            asyncio.create_task(self.claim_loop(h), name=f"workloom-claim-{h.queue}") for h in w.handlers.values()
        ]
        stop_wait = asyncio.create_task(self.stopping.wait())
        fatal: BaseException | None = None
        try:
            await asyncio.wait([stop_wait, *claimers], return_when=asyncio.FIRST_COMPLETED)
            for claimer in claimers:
                if claimer.done() and not claimer.cancelled() and claimer.exception() is not None:
                    fatal = claimer.exception()
                    self.log.error(f"cannot claim: {fatal}", extra=self.fields)
                    break
            self.request_stop()
            await self.shutdown(claimers)
        except asyncio.CancelledError:
            self.request_stop()
            self.forced.set()
            await self.shutdown(claimers)
            raise
        finally:
            stop_wait.cancel()
            self.timetable.close()
        if fatal is not None:
            raise fatal

    async def shutdown(self, claimers: list[asyncio.Task[None]]) -> None:
        """Let in-flight jobs finish within the grace period, release the rest, then let any claim still
        waiting on the server come back and give back what it got (a claim abandoned mid-wait could still
        take a run on the server, which would then sit out its lease)."""
        grace = 0.0 if self.forced.is_set() else self.worker.grace_period
        if self.jobs:
            self.log.info(
                "no new claims; waiting for in-flight jobs",
                extra={**self.fields, "in_flight": len(self.jobs), "grace_period": grace},
            )
        forced = asyncio.create_task(self.forced.wait())
        try:
            await self.wait_until([*claimers, *self.jobs, *self.side], self.loop.time() + grace, forced)
            left = [(task, tracked) for task, tracked in self.jobs.items() if not task.done()]
            if left:
                self.log.warning(
                    "grace period over: cancelling and releasing jobs still running",
                    extra={**self.fields, "jobs": len(left)},
                )
                await asyncio.gather(*(self.abandon(task, tracked) for task, tracked in left))
            if any(not c.done() for c in claimers) and not self.forced.is_set():
                self.log.info(
                    f"waiting for a pending claim to come back (at most {self.worker.wait_seconds:g}s)",
                    extra=self.fields,
                )
                limit = self.loop.time() + self.worker.wait_seconds + CLAIM_RETURN_MARGIN
                await self.wait_until(claimers, limit, forced)
        finally:
            forced.cancel()
        for claimer in claimers:
            if not claimer.done():
                self.log.warning(
                    "a waiting claim was interrupted; a run it still takes waits for its lease to run out",
                    extra={**self.fields, "queue": claimer.get_name().removeprefix("workloom-claim-")},
                )
                claimer.cancel()
        await asyncio.gather(*claimers, return_exceptions=True)
        if self.side:
            await asyncio.wait(self.side, timeout=RELEASE_TIMEOUT)
        t = self.tally
        self.log.info(
            "worker stopped",
            extra={**self.fields, "completed": t.completed, "failed": t.failed, "released": t.released, "lost": t.lost},
        )

    async def wait_until(self, tasks: list[asyncio.Task[None]], deadline: float, forced: asyncio.Task[Any]) -> None:
        """Wait for ``tasks`` (and the tasks they add to ``jobs``/``side``) until ``deadline`` or a forced stop."""
        while not self.forced.is_set():
            pending = {t for t in tasks if not t.done()} | {t for t in self.side if not t.done()}
            remaining = deadline - self.loop.time()
            if not pending or remaining <= 0:
                return
            await asyncio.wait({*pending, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def abandon(self, task: asyncio.Task[None], tracked: _Tracked) -> None:
        job = tracked.job
        if job.stop(JobState.ABANDONED, SHUTDOWN_REASON):
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    await self.client.release_run(job.run_id, job.claim_token, reason=SHUTDOWN_REASON)
            except (WorkloomError, TimeoutError) as exc:
                job.log.warning(
                    "could not release the run; it waits for its lease to run out", extra={"error": str(exc)}
                )
            else:
                self.tally.released += 1
                job.log.info("job released at shutdown")
        task.cancel()
        if job._handler_task is task:
            # Its async handler did not stop when told to. The worker does not wait for it (nor would it for a
            # handler in a task of its own); the task ends, dropping the outcome, when the handler does.
            self.halt_heartbeats(tracked)
            return
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- slots ------------------------------------------------------------------------------------------------

    async def reserve(self, handler: Handler) -> int:
        """Take up to ``handler.batch`` free slots, waiting for at least one; 0 once shutdown has begun."""
        state = self.states[handler.queue]
        capacity = min(self.worker.concurrency, handler.concurrency or self.worker.concurrency, handler.batch)
        low_water = max(1, capacity // 2)
        linger_until: float | None = None
        while True:
            if self.stopping.is_set():
                return 0
            free = self.worker.concurrency - self.used
            if handler.concurrency is not None:
                free = min(free, handler.concurrency - state.active)
            self.slot_freed.clear()
            if free <= 0:
                await self.slot_freed.wait()
                continue
            if state.busy and free < low_water:
                # The queue had more work than slots: gather a few freed slots into one claim request
                # rather than one request per finished job.
                linger_until = linger_until or self.loop.time() + CLAIM_LINGER
                if self.loop.time() < linger_until:
                    await wait_event(self.slot_freed, linger_until - self.loop.time())
                    continue
            # An idle queue long-polls holding one slot, so it does not starve the worker's other queues.
            want = 1 if state.idle and len(self.states) > 1 else handler.batch
            taken = min(free, want)
            self.used += taken
            state.active += taken
            return taken

    def unreserve(self, handler: Handler, count: int) -> None:
        if count:
            self.used -= count
            self.states[handler.queue].active -= count
            self.slot_freed.set()

    # -- claiming ---------------------------------------------------------------------------------------------

    async def claim_loop(self, handler: Handler) -> None:
        wait = self.worker.wait_seconds
        state = self.states[handler.queue]
        failures = 0
        while True:
            count = await self.reserve(handler)
            if count == 0:
                return
            began = self.loop.time()
            try:
                claims = await self.client.claim(
                    handler.queue, worker=self.actor, limit=count, lease_seconds=handler.lease_seconds,
                    wait_seconds=wait, start=self.claims_start,
                )  # fmt: skip
            except ValidationError as exc:
                self.unreserve(handler, count)
                if not (self.claims_start and any(e.field == "start" for e in exc.errors)):
                    raise
                # A server older than this SDK claims without starting: start each claim's runs after it.
                self.claims_start = False
                self.log.info("the server cannot start runs as it hands them over; starting them after each claim")
                continue
            except (AuthenticationError, PermissionDeniedError, BadRequestError):
                self.unreserve(handler, count)  # a wrong key or setting: trying again will not help
                raise
            except NotFoundError:
                self.unreserve(handler, count)
                if failures == 0:
                    self.log.warning(
                        "queue does not exist yet; waiting for it",
                        extra={**self.fields, "queue": handler.queue},
                    )
                failures += 1
                await self.pause(min(MAX_BACKOFF, 2.0 * failures))
                continue
            except WorkloomError as exc:
                self.unreserve(handler, count)
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 8)) * (0.5 + random.random() / 2)
                self.log.warning(
                    f"claim failed; trying again in {delay:.1f}s",
                    extra={**self.fields, "queue": handler.queue, "error": str(exc)},
                )
                await self.pause(delay)
                continue
            except BaseException:
                self.unreserve(handler, count)
                raise
            failures = 0
            self.unreserve(handler, count - len(claims))
            state.idle = not claims
            state.busy = len(claims) == count
            for claim in claims:
                self.begin(handler, claim, began)
            if not claims and self.loop.time() - began < max(wait / 2, 0.05):
                await self.pause(IDLE_PAUSE)  # no long-poll (or the server cut it short): do not spin

    async def complete_and_claim(self, handler: Handler, items: list[tuple[str, str, Any]]) -> list[RunOutcome]:
        """Complete a batch of ``handler``'s jobs and, unless shutting down, claim its queue's next runs for
        the slots they free, in the same request: a busy worker's loop is then one request a batch (and the
        batch's start) instead of a claim and a completion. The claimed jobs take those slots as they begin;
        the finishing jobs give theirs back right after."""
        if self.stopping.is_set():
            return await self.client.complete_runs(items)
        began = self.loop.time()
        outcomes, claims = await self.client.complete_runs_and_claim(
            items, handler.queue, worker=self.actor, limit=min(len(items), handler.batch),
            lease_seconds=handler.lease_seconds, start=self.claims_start,
        )  # fmt: skip
        if claims:
            self.used += len(claims)
            self.states[handler.queue].active += len(claims)
            for claim in claims:
                self.begin(handler, claim, began)
        return outcomes

    def begin(self, handler: Handler, claim: Claim, began: float) -> None:
        granted = (
            (claim.lease_until - claim.run.claimed_at).total_seconds() if claim.run.claimed_at is not None else 0.0
        )
        lease = float(handler.lease_seconds or max(granted, 1.0))
        job = Job(claim, client=self.client, worker=self.actor["ref"], lease_seconds=lease, logger=self.log,
                  loop=self.loop)  # fmt: skip
        if self.stopping.is_set():
            side = asyncio.create_task(self.give_back(handler, job))
            self.side.add(side)
            side.add_done_callback(self.side.discard)
            return
        tracked = _Tracked(job=job, handler=handler, last_beat=began, deadline=began + lease,
                           interval=max(lease / 3, 0.2))  # fmt: skip
        task = self.loop.create_task(self.execute(tracked), name=f"workloom-job-{job.task_id}")
        self.jobs[task] = tracked
        task.add_done_callback(self.forget)

    def forget(self, task: asyncio.Task[None]) -> None:
        self.jobs.pop(task, None)

    async def give_back(self, handler: Handler, job: Job) -> None:
        """A claim that arrived after shutdown began: release it at once."""
        try:
            await self.client.release_run(job.run_id, job.claim_token, reason=SHUTDOWN_REASON)
            self.tally.released += 1
        except WorkloomError as exc:
            job.log.warning("could not release a late claim", extra={"error": str(exc)})
        finally:
            self.unreserve(handler, 1)

    # -- one job ----------------------------------------------------------------------------------------------

    async def execute(self, tracked: _Tracked) -> None:
        job, handler = tracked.job, tracked.handler
        started = self.loop.time()
        try:
            if self.worker.start_runs and job.run.status != "running":  # not started by its claim already
                try:
                    await self.starter((job.run_id, job.claim_token))
                except (StaleClaimError, NotFoundError) as exc:
                    job.stop(JobState.LOST, "lease lost before the handler started")
                    self.tally.lost += 1
                    job.log.warning("lease lost before the handler started", extra={"error": str(exc)})
                    return
                except WorkloomError as exc:
                    job.log.warning("could not mark the run running; handling it anyway", extra={"error": str(exc)})
            if self.log.isEnabledFor(logging.DEBUG):  # spares making the job's logger when not logged
                job.log.debug("job started")
            self.start_heartbeats(tracked)
            try:
                outcome = await self.invoke(handler, job)
            finally:
                await self.stop_heartbeats(tracked)
            await self.settle(tracked, outcome, started)
        except Exception:
            job.log.exception("the worker failed while handling this job; its lease will run out")
        finally:
            job.finish()
            self.unreserve(handler, 1)

    async def invoke(self, handler: Handler, job: Job) -> _Outcome:
        if handler.is_async:
            return await self.call_async(handler, job)
        future: asyncio.Future[_Outcome] = self.loop.create_future()
        thread = threading.Thread(
            target=self.call_sync,
            args=(handler, job, future, contextvars.copy_context()),
            name=f"workloom-job-{job.task.identifier or job.task_id}",
            daemon=True,  # a handler that ignores cancellation must not keep the process alive at exit
        )
        thread.start()
        # Cancelling this task cancels the future, not the thread: the worker moves on, the thread's outcome
        # is dropped.
        return await future

    @staticmethod
    async def call_async(handler: Handler, job: Job) -> _Outcome:
        """Run an async handler in the job's own task (a task of its own would cost every job one more task
        and a wait). ``Job.stop`` cancels this task while the handler runs; that cancellation is taken back
        as the handler returns, so that a cancellation left over is the worker's own (shutdown)."""
        task = asyncio.current_task()
        assert task is not None
        job._handler_task = task
        try:
            try:
                return _Outcome("result", await handler.fn(job))
            finally:
                job._handler_task = None
                if job._handler_cancelled:
                    task.uncancel()
        except asyncio.CancelledError:
            if task.cancelling():
                raise
            return _Outcome("cancelled")
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # what a task of its own would have kept as its exception
            return _Outcome("error", error=exc)

    def call_sync(
        self, handler: Handler, job: Job, future: asyncio.Future[_Outcome], context: contextvars.Context
    ) -> None:
        try:
            outcome = _Outcome("result", context.run(handler.fn, job))
        except BaseException as exc:
            outcome = _Outcome("error", error=exc)

        def deliver() -> None:
            if not future.done():
                future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is gone (the worker exited without this job)
            self.loop.call_soon_threadsafe(deliver)

    def start_heartbeats(self, tracked: _Tracked) -> None:
        tracked.pacing = True
        tracked.job._on_report = functools.partial(self.pace, tracked)
        self.pace(tracked)

    async def stop_heartbeats(self, tracked: _Tracked) -> None:
        """No more heartbeats for the job; one in flight is cancelled and waited for."""
        beating = self.halt_heartbeats(tracked)
        if beating is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    def halt_heartbeats(self, tracked: _Tracked) -> asyncio.Task[None] | None:
        """No more heartbeats for the job; returns the one in flight, cancelled."""
        tracked.pacing = False
        tracked.job._on_report = None
        self.timetable.drop(tracked)
        beating, tracked.beating = tracked.beating, None
        if beating is not None:
            beating.cancel()
        return beating

    def pace(self, tracked: _Tracked) -> None:
        """Renew the lease every third of it; send reported progress/usage early (at most every
        ``progress_interval``), or at once when the handler awaits a report; after a failed heartbeat, only
        the retry, when it was announced. Called when the job's heartbeats start, when it reports, when the
        time it was scheduled for comes, and after each heartbeat."""
        if not tracked.pacing or tracked.beating is not None:  # a heartbeat in flight calls again when done
            return
        job = tracked.job
        if job.state is not JobState.RUNNING:
            self.timetable.drop(tracked)
            return
        now = self.loop.time()
        if tracked.retry_at is not None:
            # Neither progress nor an awaited report brings a retry forward: during an outage, each report
            # would otherwise be one more failing request (and pending progress, a request every turn).
            send, when = now >= tracked.retry_at, tracked.retry_at
        else:
            throttle = self.worker.progress_interval
            due = _due(tracked.last_beat, tracked.interval)
            dirty = job.dirty()
            send = job.flush_wanted() or now >= due or (dirty and now >= tracked.last_beat + throttle)
            when = min(due, tracked.last_beat + throttle) if dirty else due
        if send:
            self.timetable.drop(tracked)
            tracked.beating = self.loop.create_task(self.beat_and_pace(tracked))
        else:
            self.timetable.set(tracked, when)

    async def beat_and_pace(self, tracked: _Tracked) -> None:
        try:
            alive = await self.beat(tracked)
        finally:
            tracked.beating = None
        if alive:
            self.pace(tracked)

    async def beat(self, tracked: _Tracked) -> bool:
        """One heartbeat; False when the lease is lost (the handler has been cancelled)."""
        job = tracked.job
        version, progress, usage = job.take_report()
        lease_seconds = tracked.handler.lease_seconds
        sent = self.loop.time()
        try:
            async with asyncio.timeout(max(tracked.deadline - sent, 1.0)):
                beat = {"run_id": job.run_id, "claim_token": job.claim_token, "extend_seconds": lease_seconds,
                        "progress": progress, "usage": usage}  # fmt: skip
                renewed = await self.beats(beat)
        except (StaleClaimError, NotFoundError) as exc:
            self.lose(tracked, f"lease lost: {exc.detail or exc}")
            return False
        except (WorkloomError, TimeoutError) as exc:
            now = self.loop.time()
            if now >= tracked.deadline:
                self.lose(tracked, "lease ran out: heartbeats failed")
                return False
            retry_in = min(2.0, (tracked.deadline - now) / 3)
            job.log.warning(f"heartbeat failed; trying again in {retry_in:.1f}s", extra={"error": str(exc)})
            tracked.retry_at = now + retry_in
            return True
        tracked.retry_at = None
        tracked.last_beat = sent
        tracked.deadline = sent + job.lease_seconds
        job.reported(version, renewed.lease_until)
        return True

    def lose(self, tracked: _Tracked, reason: str) -> None:
        if tracked.job.stop(JobState.LOST, reason):
            self.tally.lost += 1
            tracked.job.log.warning("cancelling the handler: " + reason, extra={"reason": reason})

    async def settle(self, tracked: _Tracked, outcome: _Outcome, started: float) -> None:
        """Report the handler's outcome: complete, fail or release the run."""
        job, handler = tracked.job, tracked.handler
        timing = {"duration_ms": round((self.loop.time() - started) * 1000)}
        if job.state is JobState.LOST:
            job.log.info("handler finished after its lease was lost; outcome dropped", extra=timing)
            return
        if job.state is not JobState.RUNNING:
            return
        try:
            if outcome.kind == "result":
                try:
                    to_jsonable_python(outcome.value)
                except Exception as exc:
                    outcome = _Outcome("error", error=NonRetryableError(f"the handler's result is not JSON: {exc}"))
            if outcome.kind == "result":
                if job.dirty(usage=False) and not await self.beat(tracked):
                    return
                usage = job.usage_totals or None
                completer = self.completers.get(handler.queue)
                if completer is not None and usage is None:
                    await completer((job.run_id, job.claim_token, outcome.value))
                else:
                    await self.client.complete_run(job.run_id, job.claim_token, result=outcome.value, usage=usage)
                self.tally.completed += 1
                if self.log.isEnabledFor(logging.INFO):  # spares making the job's logger when not logged
                    job.log.info("job completed", extra=timing)
                return
            if job.dirty() and not await self.beat(tracked):
                return
            error = outcome.error
            if outcome.kind == "cancelled" or isinstance(error, Release):
                reason = error.reason if isinstance(error, Release) else "the handler was cancelled"
                await self.client.release_run(job.run_id, job.claim_token, reason=reason)
                self.tally.released += 1
                job.log.info("job released: " + (reason or "by its handler"), extra=timing)
                return
            assert error is not None
            retryable = self.classify(handler, error)
            text = describe(error)
            await self.client.fail_run(job.run_id, job.claim_token, text, retryable=retryable)
            self.tally.failed += 1
            job.log.warning(
                "job failed" + ("" if retryable else " (not retryable)"),
                extra={**timing, "error": text[:1000], "retryable": retryable},
                exc_info=None if isinstance(error, NonRetryableError) else error,
            )
        except StaleClaimError as exc:
            self.tally.lost += 1
            job.log.warning(
                "the lease was lost before the outcome was reported; the server kept it as a late result",
                extra={**timing, "error": exc.detail or str(exc)},
            )
        except WorkloomError as exc:
            job.log.error(
                "could not report the outcome; the task is retried once its lease runs out",
                extra={**timing, "error": str(exc)},
            )

    def classify(self, handler: Handler, error: BaseException) -> bool:
        if isinstance(error, NonRetryableError):
            return False
        predicate = handler.retryable or self.worker.retryable or default_retryable
        try:
            return bool(predicate(error))
        except Exception:
            self.log.exception("the retryable predicate failed; treating the error as retryable", extra=self.fields)
            return True


COMPLETE_DELAY = 0.005  # seconds a finished job waits for others to share its completion request
COMPLETE_BATCH = 100
START_BATCH = 1000  # the server's most per batch
BEAT_DELAY = 0.005  # seconds a heartbeat waits for others due with it (``_due``) to share its request
BEAT_BATCH = 1000  # the server's most per batch

Item = TypeVar("Item")


class _Batched(Generic[Item]):
    """Gathers calls and sends them as one batch request (``send``: the items, one outcome each, in order),
    after ``delay`` seconds or, with no delay, once the loop has run what was ready when the first arrived
    (the jobs of one claim all ask within that turn); each caller gets its own item's outcome (a refusal
    is raised as the SDK's typed error, as the single call would)."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list[RunOutcome]]], delay: float, most: int) -> None:
        self._send = send
        self.delay = delay
        self.most = most
        self.pending: list[tuple[Item, asyncio.Future[RunOutcome]]] = []
        self.timer: asyncio.Handle | None = None
        self.sending: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Item) -> RunOutcome:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RunOutcome] = loop.create_future()
        self.pending.append((item, done))
        if len(self.pending) >= self.most:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.delay, self.flush) if self.delay else loop.call_soon(self.flush)
        # A cancelled caller cancels only its own future, which ``send`` then skips: the others' request goes
        # on, and no outcome is left unread.
        return await done

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self.send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def send(self, batch: list[tuple[Item, asyncio.Future[RunOutcome]]]) -> None:
        try:
            outcomes = await self._send([item for item, _ in batch])
        except BaseException as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if done.done():
                continue
            error = outcome.exception
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(outcome)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds``; True if it is set. (Not ``asyncio.wait_for``: on Python 3.11 it
    can swallow a cancellation that arrives as the event fires, and the worker's loops are stopped by
    cancelling.)"""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _due(last_beat: float, interval: float) -> float:
    """When a lease's next heartbeat is due: ``interval`` after the last, rounded up to a grid of a quarter of
    it, so that the jobs holding leases of one length are renewed together (one request for all of them)
    rather than each at the instant its own claim happened to be made."""
    step = interval / 4
    return math.ceil((last_beat + interval) / step) * step


def describe(error: BaseException) -> str:
    """``Type: message`` (and the cause's), within the server's limit on error text."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    cause = error.__cause__
    if cause is not None:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:ERROR_LIMIT]
