"""The worker runtime (``workloom.worker``) against the real server.

Worker processes are started with ``workloom worker <module>:app`` (the modules are in ``workers/``); they
record what their handlers did in files, which the tests read together with the API's view of the tasks.
Scenarios that need to look inside a handler run the worker in the test's own event loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverproc import ServerProcess, metric, poll

from workloom.client import AsyncClient, Client, Run, Task
from workloom.client.errors import PROBLEM_BASE
from workloom.worker import Job, NonRetryableError, Release, Worker

WORKERS = Path(__file__).parent / "workers"
DEADLINE = 60.0
# The runtime does not depend on the database: most scenarios run on SQLite only; the lease-expiry one runs
# on both, and the big drain on PostgreSQL.
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def apoll(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``poll`` for the test's event loop; ``condition`` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.05)  # between looks at the condition, bounded by the deadline


def lines(folder: Path, suffix: str) -> dict[str, list[str]]:
    """``{file stem: recorded ids}`` for every ``*.<suffix>`` file in ``folder``."""
    return {path.stem: path.read_text().split() for path in sorted(folder.glob(f"*.{suffix}"))}


def recorded(folder: Path, suffix: str) -> list[str]:
    """Every id recorded in ``folder``'s ``*.<suffix>`` files, all processes together."""
    return [task_id for ids in lines(folder, suffix).values() for task_id in ids]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    name: str

    def logged(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text()

    def wait_started(self) -> None:
        poll(lambda: self.logged("worker started") or self.process.poll() is not None, f"{self.name} to start")
        assert self.process.poll() is None, self.log.read_text()

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def spawn(server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(target, name, *options, **env)``: a ``workloom worker`` process on the test's server."""
    started: list[WorkerProcess] = []

    def start(target: str, name: str, *options: str, **env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{name}.log"
        path = os.pathsep.join(p for p in (str(WORKERS), os.environ.get("PYTHONPATH", "")) if p)
        environ = {
            **os.environ,
            "WORKLOOM_URL": server.url,
            "WORKLOOM_API_KEY": server.token,
            "PYTHONPATH": path,
            **env,
        }
        command = [sys.executable, "-m", "workloom.cli.main", "worker", target, "--name", name, *options]
        with log.open("ab") as out:
            process = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log, name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)


@pytest.fixture
def wl(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, server.token) as client:
        yield client


def create_tasks(server: ServerProcess, queue: str, count: int) -> list[str]:
    """``count`` tasks in ``queue``, created over a few parallel connections; their ids in order."""

    async def create() -> list[str]:
        async with AsyncClient(server.url, server.token) as client:
            ids: list[str] = []
            for start in range(0, count, 50):
                batch = [
                    client.create_task(f"job {i}", queue=queue, data={"n": i})
                    for i in range(start, min(start + 50, count))
                ]
                ids += [task.id for task in await asyncio.gather(*batch)]
            return ids

    return asyncio.run(create())


def count_tasks(wl: Client, queue: str, status: str) -> int:
    return wl.list_tasks(queue=queue, status=status, limit=1, count=True).total or 0


def queue_env(queue: str, out: Path, **extra: str) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    return {"WL_TEST_QUEUE": queue, "WL_TEST_OUT": str(out), **extra}


# -- many workers, exactly once ---------------------------------------------------------------------------


def drain(
    server: ServerProcess,
    wl: Client,
    spawn: Callable[..., WorkerProcess],
    tmp_path: Path,
    *,
    workers: int,
    concurrency: int,
    tasks: int,
    sync: bool,
) -> None:
    queue = "drain"
    out = tmp_path / "handled"
    wl.create_queue(queue)
    env = queue_env(queue, out, WL_TEST_SYNC="1" if sync else "0")
    procs = [spawn("drain_app:app", f"drain{i}", "--concurrency", str(concurrency), **env) for i in range(workers)]
    for proc in procs:
        proc.wait_started()

    ids = create_tasks(server, queue, tasks)
    poll(lambda: count_tasks(wl, queue, "completed") == tasks, f"all {tasks} tasks completed", timeout=120)

    for proc in procs:
        assert proc.terminate() == 0, proc.log.read_text()[-3000:]
    handled = lines(out, "ids")
    seen = Counter(task_id for recorded in handled.values() for task_id in recorded)
    assert sum(seen.values()) == tasks, "a handler ran more often than there are tasks"
    assert sorted(seen) == sorted(ids)
    assert not [task_id for task_id, n in seen.items() if n > 1]
    assert len(handled) == workers and all(handled.values()), {pid: len(v) for pid, v in handled.items()}
    assert count_tasks(wl, queue, "completed") == tasks
    runs = wl.list_runs(ids[0])
    assert [r.status for r in runs] == ["completed"]


@SQLITE
def test_two_workers_drain_300_tasks_exactly_once(
    server: ServerProcess, wl: Client, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    drain(server, wl, spawn, tmp_path, workers=2, concurrency=4, tasks=300, sync=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_four_workers_drain_2000_tasks_exactly_once(
    server: ServerProcess, wl: Client, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    drain(server, wl, spawn, tmp_path, workers=4, concurrency=8, tasks=2000, sync=False)


# -- crashes and shutdown ---------------------------------------------------------------------------------


def test_sigkilled_worker_loses_its_leases_to_another_worker(
    server: ServerProcess, wl: Client, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = "fragile"
    wl.create_queue(queue, lease_seconds=2, max_attempts=5, initial_interval_seconds=0)
    ids = create_tasks(server, queue, 5)
    victim = spawn("hold_app:app", "victim", **queue_env(queue, tmp_path / "victim", WL_TEST_MODE="hang"))
    poll(lambda: len(recorded(tmp_path / "victim", "started")) == 5, "the victim to hold all 5")
    survivor = spawn("drain_app:app", "survivor", **queue_env(queue, tmp_path / "survivor"))
    survivor.wait_started()

    def renewed() -> bool:  # the victim heartbeats: it holds every run for longer than one lease
        runs = [wl.list_runs(task_id)[-1] for task_id in ids]
        return all(
            run.status == "running" and run.heartbeat_at and run.claimed_at
            and (run.heartbeat_at - run.claimed_at).total_seconds() > 2.5
            for run in runs
        )  # fmt: skip

    poll(renewed, "the victim's heartbeats to keep its leases past their first 2 seconds", 20)
    assert count_tasks(wl, queue, "in_progress") == 5

    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    poll(lambda: count_tasks(wl, queue, "completed") == 5, "the survivor to complete the victim's tasks", 30)

    assert sorted(recorded(tmp_path / "survivor", "ids")) == sorted(ids)
    for task_id in ids:
        runs = wl.list_runs(task_id)
        first, last = runs[0], runs[-1]
        assert first.claimed_by is not None and first.claimed_by.ref.startswith("victim@")
        assert (first.status, first.end_reason) == ("failed", "lease_expired")
        assert last.claimed_by is not None and last.claimed_by.ref.startswith("survivor@")
        assert last.status == "completed"
    assert survivor.terminate() == 0


@SQLITE
def test_sigterm_finishes_in_flight_work_then_exits_zero(
    server: ServerProcess, wl: Client, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = "graceful"
    out = tmp_path / "hold"
    ids = create_tasks(server, queue, 10)
    proc = spawn(
        "hold_app:app",
        "graceful",
        "--concurrency",
        "3",
        **queue_env(queue, out, WL_TEST_MODE="sleep", WL_TEST_SLEEP="1"),
    )
    poll(lambda: recorded(out, "started") or None, "the first handlers to start")
    began = time.monotonic()
    assert proc.terminate(timeout=30) == 0, proc.log.read_text()[-3000:]
    assert time.monotonic() - began < 10
    started = recorded(out, "started")
    finished = recorded(out, "finished")
    assert 1 <= len(started) <= 6 and sorted(finished) == sorted(started)
    for task_id in ids:
        task = wl.get_task(task_id)
        if task_id in started:
            assert task.status == "completed", task
        else:  # never claimed after the signal, and nothing left holding it
            assert task.status == "ready", task
            assert all(run.status == "queued" for run in wl.list_runs(task_id))
    assert proc.logged("SIGTERM: shutting down") and proc.logged("worker stopped")


@SQLITE
def test_sigterm_releases_what_outlasts_the_grace_period(
    server: ServerProcess, wl: Client, spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = "stubborn"
    out = tmp_path / "stuck"
    ids = create_tasks(server, queue, 2)
    proc = spawn("hold_app:app", "stubborn", "--grace-period", "0.5", **queue_env(queue, out, WL_TEST_MODE="stuck"))
    poll(lambda: len(recorded(out, "started")) == 2, "both handlers to start")
    assert proc.terminate(timeout=20) == 0, proc.log.read_text()[-3000:]
    for task_id in ids:
        assert wl.get_task(task_id).status == "ready"
        first = wl.list_runs(task_id)[0]
        assert (first.status, first.end_reason) == ("canceled", "released")
    assert proc.logged("grace period over")


# -- inside a handler (the worker in the test's event loop) -----------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: Worker) -> AsyncIterator[None]:
    """The worker serving in the background; stopped (gracefully) and awaited at the end of the block."""
    task = asyncio.create_task(app.serve(handle_signals=False))
    try:
        yield
    finally:
        app.stop()
        await asyncio.wait_for(task, 30)


@SQLITE
@pytest.mark.parametrize("style", ["async", "sync"])
async def test_handler_is_cancelled_when_its_lease_is_lost(server: ServerProcess, style: str) -> None:
    queue = f"cancel-{style}"
    started = threading.Event()
    seen: dict[str, Any] = {}
    async with AsyncClient(server.url, server.token) as client:
        await client.create_queue(queue, lease_seconds=3)  # heartbeats every second
        task = await client.create_task("long job", queue=queue)
        app = Worker(client, name="watcher", wait_seconds=1, grace_period=5)

        if style == "async":

            @app.handler(queue)
            async def handle_async(job: Job) -> str:
                started.set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    seen["cancelled"] = job.cancel_reason
                    raise
                return "finished"

        else:

            @app.handler(queue)
            def handle_sync(job: Job) -> str:
                started.set()
                job.cancelled.wait(60)
                seen["cancelled"] = job.cancel_reason
                return "finished anyway"  # dropped: the lease is gone

        async with serving(app):
            await apoll(started.is_set, "the handler to start")
            await client.cancel_task(task.id, reason="no longer needed")
            await apoll(lambda: "cancelled" in seen, "the handler to see the cancellation")

        assert "lease lost" in seen["cancelled"]
        assert (await client.get_task(task.id)).status == "canceled"
        (run,) = await client.list_runs(task.id)
        assert (run.status, run.end_reason, run.result) == ("canceled", "task_canceled", None)
        events = [e.type for e in await client.get_timeline(task.id)]
        assert "run.late_result" not in events and "run.completed" not in events


@SQLITE
async def test_a_task_created_while_the_worker_waits_is_handed_to_it(
    start_server: Callable[..., ServerProcess],
) -> None:
    """The worker keys every claim; a task created while it long-polls is claimed for it in the create's own
    commit (the hand-off), and its handler runs it."""
    server = start_server(WORKLOOM_CLAIM_POLL_SECONDS="60")  # once seen waiting, it waits until handed work
    handled: list[str] = []
    async with AsyncClient(server.url, server.token) as client:
        await client.create_queue("handed")
        app = Worker(client, name="waiting", wait_seconds=5, grace_period=2)  # the test ends within its first wait

        @app.handler("handed")
        async def handle(job: Job) -> str:
            handled.append(job.task.id)
            return "done"

        async with serving(app):
            await apoll(lambda: claimers_waiting(server) >= 1, "the worker to wait for work")
            created = await client.create_task("for the waiting worker", queue="handed")
            assert created.status == "in_progress"  # claimed for the worker as the create committed
            await apoll(lambda: handled == [created.id], "the handler to run the task")

            async def completed() -> bool:
                return (await client.get_task(created.id)).status == "completed"

            await apoll(completed, "the task to complete")


def claimers_waiting(server: ServerProcess) -> float:
    with server.client() as api:
        return metric(api, "workloom_claimers_waiting")


@SQLITE
async def test_progress_and_usage_show_in_the_run(server: ServerProcess) -> None:
    agent_reported, script_reported = threading.Event(), threading.Event()
    go = threading.Event()
    async with AsyncClient(server.url, server.token) as client:
        first = await client.create_task("agent work", queue="agent")
        second = await client.create_task("script work", queue="script")
        app = Worker(client, name="reporter", wait_seconds=1, grace_period=2, progress_interval=0.2)

        @app.handler("agent")
        async def agent(job: Job) -> dict[str, bool]:
            job.usage(tokens=100, cost=0.5)
            await job.progress({"step": 1, "of": 2})  # awaited: on the server when this returns
            agent_reported.set()
            await asyncio.to_thread(go.wait, 30)
            job.usage(tokens=20, cost=0.25)
            job.progress({"step": 2, "of": 2})
            return {"ok": True}

        @app.handler("script")
        def script(job: Job) -> str:
            job.progress("halfway")  # from a thread: rides on the next (early) heartbeat
            job.usage(tokens=7, rows=3)
            script_reported.set()
            go.wait(30)
            return "done"

        async with serving(app):

            async def run_of(task_id: str) -> Run:
                (run,) = await client.list_runs(task_id)
                return run

            await apoll(agent_reported.is_set, "the agent to report")
            run = await run_of(first.id)
            assert run.status == "running"
            assert run.progress == {"step": 1, "of": 2}
            assert run.usage == {"tokens": 100, "cost": 0.5}

            async def script_report() -> Any:
                run = await run_of(second.id)
                return (run.progress, run.usage) == ("halfway", {"tokens": 7, "rows": 3})

            await apoll(script_report, "the sync handler's progress and usage to reach the run")

            go.set()

            async def both_completed() -> bool:
                return [(await client.get_task(t.id)).status for t in (first, second)] == ["completed"] * 2

            await apoll(both_completed, "both tasks to complete")

        run = await client.get_run(run.id)
        assert run.progress == {"step": 2, "of": 2}
        assert run.usage == {"tokens": 120, "cost": 0.75}
        assert run.result == {"ok": True}
        progress_events = [
            e.payload["progress"] for e in await client.get_timeline(first.id) if e.type == "run.progress"
        ]
        assert progress_events == [{"step": 1, "of": 2}, {"step": 2, "of": 2}]


OUTCOME_QUEUES = ("flaky", "doomed", "picky", "later", "weird")


@SQLITE
async def test_outcomes_map_to_complete_fail_and_release(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token) as client:
        for queue in OUTCOME_QUEUES:
            await client.create_queue(queue, max_attempts=3, initial_interval_seconds=0)
        tasks = {queue: await client.create_task(f"{queue} job", queue=queue) for queue in OUTCOME_QUEUES}
        app = Worker(client, name="outcomes", wait_seconds=1, grace_period=2)

        @app.handler("flaky")
        async def flaky(job: Job) -> str:
            if job.attempt == 1:
                raise ConnectionError("upstream timed out")
            return f"ok on attempt {job.attempt}"

        @app.handler("doomed")
        def doomed(job: Job) -> None:
            ticket: dict[str, str] = {}
            try:
                ticket["email"]
            except KeyError as exc:
                raise NonRetryableError("ticket has no email") from exc

        @app.handler("picky", retryable=lambda exc: not isinstance(exc, LookupError))
        async def picky(job: Job) -> None:
            raise IndexError("no such row")

        @app.handler("later")
        async def later(job: Job) -> str:
            if job.attempt == 1 and len(await job.client.list_runs(job.task_id)) == 1:
                raise Release("rate limited, try later")
            return "released once, then done"

        @app.handler("weird")
        async def weird(job: Job) -> object:
            return object()

        async def all_closed() -> bool:
            found = [await client.get_task(t.id) for t in tasks.values()]
            return all(t.status in ("completed", "failed") for t in found)

        async with serving(app):
            await apoll(all_closed, "every task to complete or fail")

        async def story(queue: str) -> tuple[str, list[tuple[str, str | None]]]:
            task = await client.get_task(tasks[queue].id)
            return task.status, [(r.status, r.end_reason) for r in await client.list_runs(task.id)]

        assert await story("flaky") == ("completed", [("failed", "failed"), ("completed", "completed")])
        flaky_runs = await client.list_runs(tasks["flaky"].id)
        assert flaky_runs[0].error == "ConnectionError: upstream timed out"
        assert flaky_runs[1].result == "ok on attempt 2"
        assert await story("doomed") == ("failed", [("failed", "failed_permanently")])
        doomed_task = await client.get_task(tasks["doomed"].id)
        assert doomed_task.error == "NonRetryableError: ticket has no email (caused by KeyError: 'email')"
        assert await story("picky") == ("failed", [("failed", "failed_permanently")])
        assert await story("later") == ("completed", [("canceled", "released"), ("completed", "completed")])
        status, runs = await story("weird")
        assert (status, runs) == ("failed", [("failed", "failed_permanently")])
        assert "not JSON" in ((await client.get_task(tasks["weird"].id)).error or "")


@SQLITE
def test_worker_command_reports_what_it_cannot_load(server: ServerProcess) -> None:
    env = {**os.environ, "WORKLOOM_URL": server.url, "WORKLOOM_API_KEY": server.token}
    missing = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", "worker", "no_such_module_xyz:app"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 1 and "no module named 'no_such_module_xyz'" in missing.stderr
    bad_key = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", "worker", str(WORKERS / "drain_app.py") + ":app"],
        env={**env, "WORKLOOM_API_KEY": "wl_wrong", "WL_TEST_QUEUE": "q", "WL_TEST_OUT": "/nonexistent"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad_key.returncode == 1 and "refused the worker's key" in bad_key.stderr
    assert httpx.get(f"{server.url}/healthz").status_code == 200


class CountingTransport(httpx.AsyncHTTPTransport):
    """The client's requests, as ``METHOD path``, the items of its batch starts, and the runs handed to it by
    claims and by completions (``claim_next``)."""

    def __init__(self, *, older_server: bool = False) -> None:
        super().__init__()
        self.older_server = older_server  # refuses a claim's ``start``, as a server from before it did
        self.sent: list[str] = []
        self.started: list[int] = []  # items per POST /v1/runs/start
        self.beats: list[int] = []  # items per POST /v1/runs/heartbeat
        self.handed: Counter[str] = Counter()  # runs claimed, by "claim" or "completion"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.sent.append(f"{request.method} {path}")
        if path in ("/v1/runs/start", "/v1/runs/heartbeat"):
            (self.started if path.endswith("start") else self.beats).append(len(json.loads(request.content)["runs"]))
        if self.older_server and path.endswith("/claim") and "start" in json.loads(request.content):
            field = {"field": "start", "message": "Extra inputs are not permitted"}
            problem = {"type": PROBLEM_BASE + "validation-error", "status": 422, "title": "Invalid", "errors": [field]}
            return httpx.Response(422, json=problem, headers={"Content-Type": "application/problem+json"})
        response = await super().handle_async_request(request)
        by = "claim" if path.endswith("/claim") else "completion" if path == "/v1/runs/complete" else None
        if by is None or response.status_code != 200:
            return response
        body = await response.aread()
        self.handed[by] += len(json.loads(body).get("claims", []))
        return httpx.Response(response.status_code, headers=response.headers, content=body)


@contextlib.asynccontextmanager
async def counted_worker(
    server: ServerProcess,
    queue: str,
    tasks: int,
    concurrency: int,
    transport: CountingTransport | None = None,
    **queue_settings: Any,
) -> AsyncIterator[tuple[AsyncClient, CountingTransport, list[Task], Worker]]:
    """A client whose requests are counted (through ``transport``), ``tasks`` tasks queued in ``queue``, and a
    worker (no handler yet) with ``concurrency`` slots on that client."""
    transport = transport or CountingTransport()
    async with AsyncClient(server.url, server.token, transport=transport) as client:
        await client.create_queue(queue, **queue_settings)
        made = await client.create_tasks([{"title": f"{queue} {i}", "queue": queue} for i in range(tasks)])
        yield client, transport, made, Worker(client, name=queue, concurrency=concurrency, wait_seconds=1,
                                               grace_period=5)  # fmt: skip


async def queue_completed(client: AsyncClient, queue: str) -> bool:
    return all(t.status == "completed" for t in (await client.list_tasks(queue=queue)).items)


@SQLITE
async def test_the_runs_are_claimed_running_without_a_start_request(server: ServerProcess) -> None:
    """Each handler runs only once its run is ``running``: the worker's claims start their runs
    (``claim(start=True)``), so it sends no start request at all."""
    seen: dict[str, str] = {}
    async with counted_worker(server, "claimed-running", tasks=24, concurrency=12) as (client, transport, made, app):

        @app.handler("claimed-running")
        async def handle(job: Job) -> None:
            seen[job.task_id] = (await client.get_run(job.run_id)).status

        async with serving(app):
            await apoll(lambda: queue_completed(client, "claimed-running"), "every task to complete")

    assert set(seen) == {t.id for t in made} and set(seen.values()) == {"running"}
    assert transport.handed["claim"] + transport.handed["completion"] == 24
    assert not [s for s in transport.sent if s.endswith("/start")]


@SQLITE
async def test_against_an_older_server_the_runs_of_one_claim_are_started_in_one_request(
    server: ServerProcess,
) -> None:
    """A server from before claims could start refuses ``start``: the worker then claims as before and starts
    a claim's runs together (one request, not one per run: a per-run start cost the default worker ~7x its
    throughput on a busy queue)."""
    go = asyncio.Event()
    seen: dict[str, str] = {}
    older = CountingTransport(older_server=True)
    async with counted_worker(server, "started", tasks=12, concurrency=12, transport=older) as (
        client,
        transport,
        made,
        app,
    ):

        @app.handler("started")
        async def handle(job: Job) -> None:
            seen[job.task_id] = (await client.get_run(job.run_id)).status
            await go.wait()

        async with serving(app):
            await apoll(lambda: len(seen) == 12, "every handler to start")
            go.set()
            await apoll(lambda: queue_completed(client, "started"), "every task to complete")

    assert set(seen) == {t.id for t in made} and set(seen.values()) == {"running"}
    assert transport.started == [12]  # the twelve runs claimed together, started together
    assert not [s for s in transport.sent if s.endswith("/start") and s != "POST /v1/runs/start"]


@SQLITE
async def test_a_busy_workers_completions_claim_its_next_runs(server: ServerProcess) -> None:
    """A batch of completions claims the queue's next runs for the slots it frees, in the same request: a
    busy worker does not also send a claim per batch."""
    done: Counter[str] = Counter()
    async with counted_worker(server, "chained", tasks=36, concurrency=12) as (client, transport, made, app):

        @app.handler("chained")
        async def handle(job: Job) -> None:
            done[job.task_id] += 1

        async with serving(app):
            await apoll(lambda: queue_completed(client, "chained"), "every task to complete")

    assert done == Counter({t.id: 1 for t in made})
    assert transport.handed["claim"] + transport.handed["completion"] == 36
    assert transport.handed["completion"] >= 12  # at least a whole batch came with the completions before it


@SQLITE
async def test_the_leases_of_jobs_claimed_together_are_renewed_together(server: ServerProcess) -> None:
    """Heartbeats fall due on a shared grid and are sent as one ``POST /v1/runs/heartbeat`` for every job
    due: a worker holding many leases renews them in one request, not one request per job."""
    go = asyncio.Event()
    # Leases of 3 s: renewed every second or so.
    async with counted_worker(server, "beating", tasks=6, concurrency=6, lease_seconds=3) as (
        client,
        transport,
        made,
        app,
    ):

        @app.handler("beating")
        async def handle(job: Job) -> None:
            await go.wait()

        async with serving(app):
            await apoll(lambda: transport.beats.count(6) >= 2, "two heartbeats of all six leases", timeout=30)
            go.set()
            await apoll(lambda: queue_completed(client, "beating"), "every task to complete")

        runs = [(await client.list_runs(t.id))[-1] for t in made]

    assert [(r.status, r.end_reason) for r in runs] == [("completed", "completed")] * 6
    assert all(r.heartbeat_at is not None for r in runs)
    assert not [s for s in transport.sent if s.endswith("/heartbeat") and s != "POST /v1/runs/heartbeat"]
