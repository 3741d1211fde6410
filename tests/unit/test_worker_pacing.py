"""The worker's per-job machinery against a stand-in server (``FakeServer``): when heartbeats are sent and what
they carry, how a job's handler is cancelled (lease lost, lease run out, shutdown) and how that differs from
the worker itself being cancelled. Fast and deterministic where the API tests need a server process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workloom.client import Claim, Run, RunOutcome, Task, WorkloomError
from workloom.worker import Job, JobCancelled, JobState, Worker

STALE = {"type": "https://workloom.dev/problems/stale-claim", "title": "Stale claim", "status": 409, "detail": "gone"}


class FakeServer:
    """Stands in for ``AsyncClient``: hands out ``tasks`` claims, answers the worker's batch calls and
    records them (``beats``: each heartbeat request's items with the loop time it arrived)."""

    base_url = "http://fake"

    def __init__(self, tasks: int, lease_seconds: int = 30) -> None:
        self.lease_seconds = lease_seconds
        self.waiting = [self.claim_of(i) for i in range(tasks)]
        self.beats: list[tuple[float, list[dict[str, Any]]]] = []
        self.completed: dict[str, Any] = {}
        self.released: dict[str, str | None] = {}
        self.failed: dict[str, str] = {}
        self.stale: set[str] = set()  # runs whose heartbeats are refused: the lease is gone
        self.beat_error: WorkloomError | None = None  # every heartbeat request fails with this
        self.hold: asyncio.Event | None = None  # when set: heartbeats are answered once it is set
        self.holding = asyncio.Event()  # a heartbeat request arrived and waits for ``hold``
        self.more = asyncio.Event()

    def claim_of(self, i: int) -> Claim:
        now = datetime.now(UTC)
        task = Task(id=f"task{i}", title=f"job {i}", queue="q", status="in_progress")
        run = Run(id=f"run{i}", task_id=task.id, queue="q", attempt=1, status="claimed", claimed_at=now)
        return Claim(
            task=task, run=run, claim_token=f"token{i}", lease_until=now + timedelta(seconds=self.lease_seconds)
        )

    def take(self, limit: int) -> list[Claim]:
        taken, self.waiting = self.waiting[:limit], self.waiting[limit:]
        return taken

    async def claim(self, queue: str, *, limit: int, wait_seconds: float, **_: Any) -> list[Claim]:
        if not self.waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):  # a long poll, as the server's
                    await self.more.wait()
        return self.take(limit)

    @staticmethod
    def done(items: list[Any]) -> list[RunOutcome]:
        return [RunOutcome(run_id=item[0], status="completed") for item in items]

    async def complete_runs(self, items: list[tuple[str, str, Any]]) -> list[RunOutcome]:
        self.completed.update({run_id: result for run_id, _, result in items})
        return self.done(items)

    async def complete_runs_and_claim(
        self, items: list[tuple[str, str, Any]], queue: str, *, limit: int, **_: Any
    ) -> tuple[list[RunOutcome], list[Claim]]:
        return await self.complete_runs(items), self.take(limit)

    async def complete_run(self, run_id: str, token: str, *, result: Any = None, usage: Any = None) -> None:
        self.completed[run_id] = result

    async def start_runs(self, items: list[tuple[str, str]]) -> list[RunOutcome]:
        return [RunOutcome(run_id=run_id, status="running") for run_id, _ in items]

    async def heartbeat_runs(self, items: list[dict[str, Any]]) -> list[RunOutcome]:
        self.beats.append((asyncio.get_running_loop().time(), items))
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if self.beat_error is not None:
            raise self.beat_error
        until = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        return [
            RunOutcome(run_id=i["run_id"], error=STALE)
            if i["run_id"] in self.stale
            else RunOutcome(run_id=i["run_id"], status="running", lease_until=until)
            for i in items
        ]

    async def release_run(self, run_id: str, token: str, *, reason: str | None = None) -> None:
        self.released[run_id] = reason

    async def fail_run(self, run_id: str, token: str, error: str, *, retryable: bool = True) -> None:
        self.failed[run_id] = error

    def reports(self, run_id: str) -> list[tuple[float, Any]]:
        """When each heartbeat carrying progress for ``run_id`` arrived, and that progress."""
        return [
            (at, i["progress"]) for at, items in self.beats for i in items if i["run_id"] == run_id and i["progress"]
        ]


async def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # between looks at the condition, bounded by the deadline
    return value


def worker(server: FakeServer, **options: Any) -> Worker:
    settings: dict[str, Any] = {"concurrency": 100, "wait_seconds": 0.05, "grace_period": 5, **options}
    client: Any = server  # stands in for an AsyncClient
    return Worker(client, name="paced", **settings)


@contextlib.asynccontextmanager
async def serving(app: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(app.serve(handle_signals=False))
    try:
        yield task
    finally:
        app.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


# -- heartbeats ---------------------------------------------------------------------------------------------


async def test_the_leases_of_many_jobs_are_renewed_in_one_request() -> None:
    server = FakeServer(40)
    app = worker(server)
    go = asyncio.Event()

    @app.handler("q", lease_seconds=1)  # renewed about every third of a second
    async def hold(job: Job) -> None:
        await go.wait()

    async with serving(app):
        await until(lambda: [len(items) for _, items in server.beats].count(40) >= 2, "two renewals of all 40")
        go.set()
        await until(lambda: len(server.completed) == 40, "every job to complete")


async def test_an_awaited_report_is_sent_at_once_and_the_next_one_after_the_progress_interval() -> None:
    """A lease of 60 s is not renewed for 20 s: what reaches the server sooner was sent for the report."""
    server = FakeServer(1, lease_seconds=60)
    app = worker(server, progress_interval=0.3)
    go = asyncio.Event()
    asked_at: list[float] = []
    on_return: list[list[tuple[float, Any]]] = []

    @app.handler("q")
    async def report(job: Job) -> None:
        asked_at.append(asyncio.get_running_loop().time())
        await job.progress("first")
        on_return.append(server.reports(job.run_id))
        job.progress("second")  # not awaited: rides on a heartbeat sent once the interval has passed
        await go.wait()

    async with serving(app):
        (first, second) = await until(lambda: len(server.reports("run0")) == 2 and server.reports("run0"), "2 reports")
        go.set()
        await until(lambda: "run0" in server.completed, "the job to complete")

    assert on_return == [[first]] and (first[1], second[1]) == ("first", "second")
    # The first heartbeat was sent after the handler asked; the next no sooner than the interval after it
    # (less the loop's clock resolution).
    assert second[0] - asked_at[0] >= 0.3 - 0.001


async def test_an_awaited_report_does_not_wait_for_the_progress_interval() -> None:
    server = FakeServer(1, lease_seconds=60)
    app = worker(server, progress_interval=60)
    returned = asyncio.Event()

    @app.handler("q")
    async def report(job: Job) -> None:
        await job.usage(tokens=5)
        returned.set()

    async with serving(app):
        await asyncio.wait_for(returned.wait(), 10)  # not the 20 s until the lease is renewed

    ((_, items),) = server.beats
    assert [i["usage"] for i in items] == [{"tokens": 5}]


async def test_progress_reported_from_a_sync_handlers_thread_is_sent_before_the_lease_needs_renewing() -> None:
    server = FakeServer(1, lease_seconds=60)
    app = worker(server, progress_interval=0.1)
    go = threading.Event()

    @app.handler("q")
    def report(job: Job) -> None:
        job.progress("halfway")
        go.wait(10)

    async with serving(app):
        await until(lambda: server.reports("run0"), "the report to reach the server")
        go.set()
        await until(lambda: "run0" in server.completed, "the job to complete")

    assert [p for _, p in server.reports("run0")] == ["halfway"]


async def test_failing_heartbeats_are_retried_until_the_lease_runs_out_then_the_handler_is_cancelled() -> None:
    server = FakeServer(1, lease_seconds=1)
    server.beat_error = WorkloomError("server unavailable", status=503)
    app = worker(server)
    reasons: list[str | None] = []

    @app.handler("q", lease_seconds=1)
    async def hold(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            reasons.append(job.cancel_reason)
            raise

    async with serving(app):
        await until(lambda: reasons, "the handler to be cancelled", timeout=15)
        await until(lambda: not app.running_jobs, "the job to end")

    assert reasons == ["lease ran out: heartbeats failed"]
    assert len(server.beats) >= 2  # retried before giving up
    assert not server.completed and not server.released  # the run's lease is gone: nothing more is sent


@pytest.mark.parametrize("awaited", [False, True], ids=["reported", "awaited"])
async def test_failing_heartbeats_with_reports_pending_are_retried_no_sooner_than_announced(
    awaited: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Progress reported (or awaited) all through an outage does not hurry the retries: each failed heartbeat
    is tried again no sooner than the warning it logged says, until the lease runs out."""
    server = FakeServer(1, lease_seconds=2)
    server.beat_error = WorkloomError("server unavailable", status=503)
    app = worker(server, progress_interval=0.01)
    reasons: list[str | None] = []
    waiting: set[asyncio.Task[None]] = set()  # awaited reports, each in a task of its own: none is answered

    @app.handler("q", lease_seconds=2)
    async def report(job: Job) -> None:
        async def awaits(step: int) -> None:
            await job.progress(step)

        try:
            for step in itertools.count():
                if awaited:
                    waiting.add(asyncio.create_task(awaits(step)))
                else:
                    job.progress(step)
                await asyncio.sleep(0.02)  # the handler's work between reports
        except asyncio.CancelledError:
            reasons.append(job.cancel_reason)
            raise

    with caplog.at_level("WARNING", logger="workloom.worker"):
        async with serving(app):
            await until(lambda: reasons, "the handler to be cancelled", timeout=15)
            await until(lambda: not app.running_jobs, "the job to end")

    assert reasons == ["lease ran out: heartbeats failed"]
    announced = [
        float(m.group(1))
        for m in (re.match(r"heartbeat failed; trying again in ([\d.]+)s", t) for t in caplog.messages)
        if m
    ]
    sent = [at for at, _ in server.beats]
    assert len(announced) == len(sent) - 1  # every failure but the last (past the lease) announced a retry
    assert announced[0] >= 0.5  # a third of what was left of the 2 s lease
    # Each retry came no sooner than announced (the warning rounds it to a tenth of a second).
    too_soon = [
        (round(later - at, 3), wait)
        for at, later, wait in zip(sent[:-1], sent[1:], announced, strict=True)
        if later - at < wait - 0.05
    ]
    assert not too_soon
    assert all(items[0]["progress"] is not None for _, items in server.beats)  # each retry carried the report
    assert all(t.done() for t in waiting)  # the lost job's awaited reports were let go


async def test_a_report_awaited_while_a_heartbeat_is_in_flight_is_sent_as_soon_as_that_one_returns() -> None:
    """The heartbeat in flight carries an older report: the newer, awaited one follows it at once (not after the
    progress interval), and its await returns once a heartbeat carrying it has been answered."""
    server = FakeServer(1, lease_seconds=60)
    server.hold = hold = asyncio.Event()
    app = worker(server, progress_interval=60)
    seen_on_return: dict[str, list[Any]] = {}

    @app.handler("q")
    async def report(job: Job) -> None:
        async def awaits(step: str) -> None:
            await job.progress(step)
            seen_on_return[step] = [p for _, p in server.reports(job.run_id)]

        first = asyncio.create_task(awaits("first"))
        await server.holding.wait()  # the heartbeat carrying "first" is in flight
        # Answered as soon as the await below has been made (the await runs up to its wait at once).
        asyncio.get_running_loop().call_soon(hold.set)
        await awaits("second")
        await first

    async with serving(app):
        await until(lambda: "run0" in server.completed, "the job to complete", timeout=5)  # not the 60 s interval

    assert [p for _, p in server.reports("run0")] == ["first", "second"]
    assert seen_on_return == {"first": ["first"], "second": ["first", "second"]}


# -- cancellation ---------------------------------------------------------------------------------------------


async def test_job_cancelled_is_one_event_whichever_thread_asks_first_and_set_once_the_job_stops() -> None:
    loop = asyncio.get_running_loop()
    server = FakeServer(2)
    client: Any = server
    made = [
        Job(claim, client=client, worker="w", lease_seconds=30, logger=logging.getLogger("test"), loop=loop)
        for claim in server.take(2)
    ]
    asked_first = await asyncio.to_thread(lambda: made[0].cancelled)  # a sync handler's thread looks first
    assert not asked_first.is_set()
    assert made[0].stop(JobState.LOST, "lease lost: gone")
    assert made[0].cancelled is asked_first and asked_first.is_set()

    assert made[1].stop(JobState.ABANDONED, "worker shutting down")  # nobody looked before it stopped
    assert made[1].cancelled.is_set() and made[1].cancel_reason == "worker shutting down"
    with pytest.raises(JobCancelled, match="worker shutting down"):
        made[1].raise_if_cancelled()


@pytest.mark.parametrize("returns", [False, True], ids=["raises", "returns"])
async def test_a_lost_lease_cancels_the_async_handler_and_drops_its_outcome(
    returns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer(1)
    server.stale.add("run0")
    app = worker(server)
    cancels: list[str | None] = []

    @app.handler("q", lease_seconds=1)
    async def hold(job: Job) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancels.append(job.cancel_reason)
            assert job.cancelled.is_set()
            if not returns:
                raise
        return "finished anyway"

    with caplog.at_level("INFO", logger="workloom.worker"):
        async with serving(app):
            await until(lambda: cancels and not app.running_jobs, "the handler to be cancelled and end")

    assert cancels == ["lease lost: gone"]
    assert not server.completed and not server.released
    assert "handler finished after its lease was lost; outcome dropped" in caplog.messages


async def test_a_handler_that_raises_cancelled_error_itself_releases_its_run() -> None:
    server = FakeServer(1)
    app = worker(server)

    @app.handler("q")
    async def gives_up(job: Job) -> None:
        raise asyncio.CancelledError

    async with serving(app):
        await until(lambda: server.released, "the run to be released")

    assert server.released == {"run0": "the handler was cancelled"}


async def test_shutdown_releases_an_async_handler_that_ignores_cancellation_without_waiting_for_it() -> None:
    server = FakeServer(1)
    app = worker(server, grace_period=0.1)
    started, let_go = asyncio.Event(), asyncio.Event()
    cancels = itertools.count()
    returned: list[str] = []

    @app.handler("q")
    async def ignores(job: Job) -> str:
        started.set()
        while not let_go.is_set():
            try:
                await let_go.wait()
            except asyncio.CancelledError:
                next(cancels)
        returned.append("late")
        return "late"

    try:
        async with serving(app) as serve:
            await started.wait()
            app.stop()
            await asyncio.wait_for(asyncio.shield(serve), 5)  # while the handler still runs
        assert server.released == {"run0": "worker shutting down"}
        assert next(cancels) >= 1 and not returned
    finally:
        let_go.set()  # else the test's loop could not close
    await until(lambda: returned, "the handler to return")
    assert not server.completed  # what it returned was dropped


async def test_cancelling_the_worker_cancels_and_releases_its_jobs() -> None:
    server = FakeServer(3)
    app = worker(server)
    running: set[str] = set()
    cancelled: list[str | None] = []

    @app.handler("q")
    async def hold(job: Job) -> None:
        running.add(job.run_id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(job.cancel_reason)
            raise

    serve = asyncio.create_task(app.serve(handle_signals=False))
    await until(lambda: len(running) == 3, "three handlers to run")
    serve.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serve, 5)

    assert cancelled == ["worker shutting down"] * 3
    assert server.released == dict.fromkeys(running, "worker shutting down")
