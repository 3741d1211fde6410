"""The performance suite: Workloom against its peers, on the same database, in the same run.

    python -m bench [--database-url URL] [--runs 3] [--scenarios drain,single] [--quick] [--full]
                    [--no-peers] [--json PATH] [--png PATH] [--text PATH]

See bench/README.md for what each scenario does, the targets and the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import itertools
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import httpx

from bench.lifecycle import _free_port, bench_database, percentile
from bench.loadgen import Http
from bench.peers.costs import WAL_POSITION, Window

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PEERS_VENV = Path(os.environ.get("WORKLOOM_BENCH_PEERS_VENV", Path.home() / ".cache/workloom-bench/peers-venv"))
PEER_PACKAGES = ["pgqueuer==1.6.*", "procrastinate==3.10.*", "asyncpg", "psycopg[binary]"]
SCENARIOS = ["drain", "single", "enqueue", "latency", "heartbeat", "fanout", "backlog", "sqlite"]
CLIENTS = 16
LATENCY_WORKERS = 10  # as many as procrastinate's worker runs jobs at once in the same scenario
LATENCY_WAIT = 2.0  # a long-poll's wait, a claim's or a completion's that waits for the next
BOOT_TIMEOUT = 60.0


# -- sizes and options ---------------------------------------------------------------------------------------


@dataclass
class Sizes:
    drain: int = 20_000
    drain_procrastinate: int = 5_000  # ≈ 0.5k/s: its rate, not its total, is what is compared
    drain_claimers: int = 4
    drain_limit: int = 100  # the most one claim may ask for
    single: int = 3_000
    enqueue_one: int = 3_000
    enqueue_batch: int = 20_000
    enqueue_chunk: int = 1_000  # as procrastinate's and pgqueuer's batches (bench/peers), and the API's most
    batch_chunk: int = 500  # loading the other scenarios' queues
    latency: int = 1_000
    latency_rate: float = 200.0
    heartbeat_held: int = 5_000  # leases held, each renewed once per measurement
    heartbeat_batch: int = 100  # the leases one worker's batch renews (a worker of 100 slots)
    backlog: tuple[int, ...] = (10_000, 100_000)
    backlog_claims: int = 100
    fanout_subscribers: int = 1_000
    fanout_tasks: int = 40
    pgbench_seconds: int = 10

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            drain=300,
            drain_procrastinate=100,
            single=150,
            enqueue_one=150,
            enqueue_batch=500,
            enqueue_chunk=100,
            batch_chunk=100,
            latency=60,
            heartbeat_held=100,
            heartbeat_batch=20,
            backlog=(500,),
            backlog_claims=10,
            fanout_subscribers=20,
            fanout_tasks=5,
            pgbench_seconds=2,
        )


@dataclass
class Suite:
    runs: int
    sizes: Sizes
    peers: bool
    quick: bool
    figures: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    modes: dict[str, Any] = field(default_factory=dict)
    profile: Path | None = None
    profile_format: str = "flamegraph"
    server_processes: int = 1  # ``workloom serve --workers`` on PostgreSQL (SQLite is always one)

    def record(self, scenario: str, metric: str, value: float | None, unit: str) -> None:
        if value is None:
            return
        self.figures.setdefault(scenario, {}).setdefault(metric, []).append(round(float(value), 3))
        self.units[f"{scenario}.{metric}"] = unit

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# -- processes -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sampled(suite: Suite, pid: int, name: str) -> Iterator[None]:
    """With ``--profile DIR``: py-spy samples the server process ``pid`` (and the server processes it
    supervises, if any) while the block runs."""
    if suite.profile is None:
        yield
        return
    spy = shutil.which("py-spy")
    if spy is None:
        suite.note("--profile needs py-spy on PATH (pip install py-spy); no profiles were taken")
        yield
        return
    suite.profile.mkdir(parents=True, exist_ok=True)
    extension = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[suite.profile_format]
    out = suite.profile / f"{name}.{extension}"
    # Not --nonblocking: reading a running interpreter's memory tears async stacks (half the samples came
    # back as two frames of asyncpg with no caller); pausing it costs a little speed, not the attribution.
    command = [spy, "record", "--pid", str(pid), "--rate", "200", "--subprocesses"]
    command += ["--format", suite.profile_format, "-o", str(out)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()


def raise_fd_limit(wanted: int = 65_536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Process:
    base: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], ready_path: str) -> Iterator[Process]:
    """A server process listening on a free port (``{port}`` in ``command``); stopped with SIGTERM."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"{command[2]} exited with {process.returncode}:\n{log.read().decode()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(base + ready_path, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{command} was not ready after {BOOT_TIMEOUT:.0f}s")
                time.sleep(0.05)
            yield Process(base, process)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def workloom_server(database_url: str, token: str, processes: int = 1) -> contextlib.AbstractContextManager[Process]:
    """``workloom serve``; with ``processes`` above 1, that many server processes under its supervisor."""
    command = [sys.executable, "-m", "workloom.cli.main", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    if processes > 1:
        command += ["--workers", str(processes)]
    env = {"WORKLOOM_DATABASE_URL": database_url, "WORKLOOM_BOOTSTRAP_TOKEN": token, "WORKLOOM_LOG_LEVEL": "warning"}
    return started(command, env, "/readyz")


def bare_server(database_url: str) -> contextlib.AbstractContextManager[Process]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.peers.bare_endpoint:app",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return started(command, {"BARE_DATABASE_URL": database_url}, "/readyz")


def peers_python(install: bool) -> Path | None:
    """The python of the peers virtualenv (pgqueuer, procrastinate); created and filled when ``install``."""
    python = PEERS_VENV / "bin" / "python"
    check = [str(python), "-c", "import pgqueuer, procrastinate, asyncpg, psycopg"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    if not install:
        return None
    PEERS_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_peer(python: Path, script: str, *args: object, timeout: float = 600) -> dict[str, Any]:
    completed = subprocess.run(
        [str(python), str(PEERS / script), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{script} {args[1:]} failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# -- talking to Workloom -----------------------------------------------------------------------------------------


def resident(server: Any) -> int:
    """The resident memory of the server, all its processes together, in bytes."""
    return sum(int(p.memory_info().rss) for p in server_processes(server))


def server_processes(server: Any) -> list[Any]:
    """``server`` (a psutil process) and the server processes it supervises (``--workers``), if any."""
    import psutil

    found = [server]
    with contextlib.suppress(psutil.Error):
        found += [c for c in server.children() if "spawn_main" in " ".join(c.cmdline())]
    return found


class Meter:
    """CPU time per task of each part of the system while a measurement runs: the server process, PostgreSQL
    (every process named ``postgres``: on this machine the bench's database is the only busy one) and this
    process, the load generator; and on PostgreSQL the WAL bytes written per task (``bench/peers/costs.py``,
    which the peers' scripts count theirs with). All of them share the cores, so where a figure is CPU-bound
    these say which part to make cheaper. ``scenario``: record under it (``sqlite``), the measurement's own
    scenario then prefixing the metric. ``database_url``: where to read the WAL position; None: no WAL
    figure (SQLite)."""

    def __init__(self, suite: Suite, server_pid: int, *, database_url: str | None, scenario: str | None = None) -> None:
        import psutil

        self._suite = suite
        self._server = psutil.Process(server_pid)
        self._client = psutil.Process()
        self._url = database_url
        self._scenario = scenario

    @contextlib.contextmanager
    def per_task(self, scenario: str, prefix: str, tasks: int) -> Iterator[None]:
        before = self._read()
        window = Window.open(self._wal_position()) if self._url else None
        yield
        costs = window.close(self._wal_position(), tasks) if window else {}
        after = self._read()
        record_as, metric = (scenario, prefix) if self._scenario is None else (self._scenario, f"{scenario}_{prefix}")
        per_task = {
            "cpu_us_server": (after[0] - before[0]) / max(tasks, 1) * 1e6,
            "cpu_us_postgres": costs.get("cpu_us_postgres"),
            "cpu_us_client": (after[1] - before[1]) / max(tasks, 1) * 1e6,
            "wal_bytes": costs.get("wal_bytes"),
        }
        for key, value in per_task.items():
            if value is not None:
                self._suite.record(record_as, f"{metric}{key}", value, "B/task" if key == "wal_bytes" else "µs/task")

    def _wal_position(self) -> str:
        """Read on a thread of its own: the caller may be inside a running event loop."""
        assert self._url is not None
        url = self._url
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            position: str = pool.submit(lambda: asyncio.run(_pg(url, WAL_POSITION))).result()
        return position

    def _read(self) -> tuple[float, float]:
        """CPU seconds of the server processes and of this one (PostgreSQL's are ``Window``'s)."""
        import psutil

        def used(process: psutil.Process) -> float:
            times = process.cpu_times()
            return float(times.user + times.system)

        return sum(used(p) for p in server_processes(self._server)), used(self._client)


class Api:
    """Raw HTTP to one server, plus which batch endpoints it has (probed on first use)."""

    def __init__(self, base: str, token: str, connections: int = 64) -> None:
        self.http = Http(base, {"Authorization": f"Bearer {token}"}, connections)
        self.batch_create: bool | None = None
        self.batch_complete: bool | None = None
        self.meter: Meter | None = None

    def per_task(self, scenario: str, prefix: str, tasks: int) -> contextlib.AbstractContextManager[None]:
        """CPU per task while the block runs (``Meter``), when the runner gave this client a meter."""
        return self.meter.per_task(scenario, prefix, tasks) if self.meter else contextlib.nullcontext()

    async def close(self) -> None:
        await self.http.aclose()

    async def queue(self, name: str) -> None:
        response = await self.http.post("/v1/queues", json={"name": name})
        if response.status_code not in (201, 409):
            raise RuntimeError(f"create queue: {response.status_code} {response.text[:300]}")

    async def create_one(self, queue: str, data: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/v1/tasks", json={"title": "bench", "queue": queue, "data": data})
        if response.status_code != 201:
            raise RuntimeError(f"create: {response.status_code} {response.text[:300]}")
        task: dict[str, Any] = response.json()
        return task

    async def create_batch(self, queue: str, count: int) -> bool:
        """One ``POST /v1/tasks/batch`` of ``count`` tasks; False when the server has no such endpoint."""
        if self.batch_create is False:
            return False
        body = {"tasks": [{"title": "bench", "queue": queue, "data": {"n": i}} for i in range(count)]}
        response = await self.http.post("/v1/tasks/batch", json=body)
        if response.status_code in (404, 405):
            self.batch_create = False
            return False
        if response.status_code != 201:
            raise RuntimeError(f"batch create: {response.status_code} {response.text[:300]}")
        self.batch_create = True
        return True

    async def fill(self, queue: str, count: int, chunk: int) -> None:
        """``count`` tasks in ``queue``, through the batch endpoint if there is one (else 16 clients one by one)."""
        await self.queue(queue)
        done = 0
        while done < count:
            size = min(chunk, count - done)
            if not await self.create_batch(queue, size):
                break
            done += size
        if done < count:
            numbers = iter(range(count - done))

            async def creator() -> None:
                for i in numbers:
                    await self.create_one(queue, {"n": i})

            await asyncio.gather(*(creator() for _ in range(CLIENTS)))

    async def complete_many(self, claims: list[dict[str, Any]]) -> None:
        if self.batch_complete is not False:
            items = [{"run_id": c["run"]["id"], "claim_token": c["claim_token"], "result": None} for c in claims]
            response = await self.http.post("/v1/runs/complete", json={"runs": items})
            if response.status_code in (404, 405):
                self.batch_complete = False
            elif response.status_code == 200:
                self.batch_complete = True
                return
            else:
                raise RuntimeError(f"batch complete: {response.status_code} {response.text[:300]}")
        await asyncio.gather(*(self.complete_one(c) for c in claims))

    async def complete_one(
        self, claim: dict[str, Any], claim_next: bool = False, key: str | None = None, wait: float = 0.0
    ) -> list[dict[str, Any]]:
        """Complete the claim's run; with ``claim_next`` the run claimed after it in the same call (or none),
        waited for up to ``wait`` seconds when there is none yet. ``key``: sent as its ``Idempotency-Key``, as
        the SDK sends one with every call."""
        body: dict[str, Any] = {"claim_token": claim["claim_token"]}
        if claim_next:
            body["claim_next"] = {"limit": 1, "wait_seconds": wait} if wait else {"limit": 1}
        headers = {"Idempotency-Key": key} if key else None
        response = await self.http.post(f"/v1/runs/{claim['run']['id']}/complete", json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"complete: {response.status_code} {response.text[:300]}")
        claims: list[dict[str, Any]] = response.json()["claims"] if claim_next else []
        return claims

    async def claim(
        self, queue: str, limit: int, wait: float, ref: str = "bench", key: str | None = None
    ) -> list[dict[str, Any]]:
        body = {"worker": {"kind": "automation", "ref": ref}, "limit": limit, "wait_seconds": wait}
        headers = {"Idempotency-Key": key} if key else None
        response = await self.http.post(f"/v1/queues/{queue}/claim", json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"claim: {response.status_code} {response.text[:300]}")
        claims: list[dict[str, Any]] = response.json()["claims"]
        return claims


# -- Workloom scenarios ------------------------------------------------------------------------------------------


async def wl_drain(base: str, token: str, api: Api, queue: str, sizes: Sizes, suite: Suite) -> float:
    """SDK workers over HTTP: batch claims, batched completion (or concurrent single completions)."""
    from workloom.client import AsyncClient

    await api.fill(queue, sizes.drain, sizes.batch_chunk)
    total = sizes.drain
    done = 0
    clients = [AsyncClient(base, token, worker={"kind": "automation", "ref": f"drain-{i}"}) for i in range(4)]
    sdk_batch = hasattr(clients[0], "complete_runs")
    chained = hasattr(clients[0], "complete_runs_and_claim")

    async def complete(sdk: Any, claims: list[Any]) -> list[Any]:
        """Complete ``claims``; the next batch when the server claims it in the same call."""
        if chained:
            _, claimed = await sdk.complete_runs_and_claim(
                [(c.run.id, c.claim_token) for c in claims], queue, limit=sizes.drain_limit
            )
            return list(claimed)
        if sdk_batch:
            await sdk.complete_runs([(c.run.id, c.claim_token) for c in claims])
        elif api.batch_complete is not False:
            await api.complete_many([{"run": {"id": c.run.id}, "claim_token": c.claim_token} for c in claims])
        else:
            await asyncio.gather(*(sdk.complete_run(c.run.id, c.claim_token) for c in claims))
        return []

    last = started_at = 0.0

    async def claimer(sdk: Any) -> None:
        nonlocal done, last
        while done < total:
            claims = await sdk.claim(queue, limit=sizes.drain_limit, wait_seconds=1)
            while claims:
                completed = len(claims)
                claims = await complete(sdk, claims)
                done += completed
                last = time.perf_counter()

    try:
        with api.per_task("drain", "", total):
            last = started_at = time.perf_counter()  # after the meter's first reading
            await asyncio.wait_for(asyncio.gather(*(claimer(c) for c in clients[: sizes.drain_claimers])), 900)
    finally:
        for c in clients:
            await c.aclose()
    suite.modes["drain_completion"] = (
        "SDK complete_runs_and_claim (each batch's completion claims the next)"
        if chained
        else "SDK complete_runs"
        if sdk_batch
        else "POST /v1/runs/complete"
        if api.batch_complete
        else "one by one"
    )
    return done / (last - started_at)


async def wl_drain_worker(base: str, token: str, api: Api, queue: str, sizes: Sizes) -> float:
    """The same drain by the SDK's own ``Worker`` (``workloom.worker``), as an application runs it: one per
    drain claimer, each with as many slots as a claim may take, every run started before its (no-op)
    handler (``start_runs``, the default), completions batched and claiming the next runs. Timed until the
    last handler returned; the workers are stopped after."""
    from workloom.client import AsyncClient
    from workloom.worker import Job, Worker

    await api.fill(queue, sizes.drain, sizes.batch_chunk)
    total, done = sizes.drain, 0
    finished = asyncio.Event()

    async def handle(job: Job) -> None:
        nonlocal done
        done += 1
        if done >= total:
            finished.set()

    clients = [AsyncClient(base, token) for _ in range(sizes.drain_claimers)]
    workers = [
        Worker(client, name=f"drain-worker-{i}", concurrency=sizes.drain_limit, wait_seconds=1, grace_period=5)
        for i, client in enumerate(clients)
    ]
    for worker in workers:
        worker.add_handler(queue, handle)
    try:
        with api.per_task("drain", "worker_", total):
            began = time.perf_counter()
            serving = [asyncio.create_task(w.serve(handle_signals=False)) for w in workers]
            await asyncio.wait_for(finished.wait(), 900)
            elapsed = time.perf_counter() - began
        for worker in workers:
            worker.stop()
        await asyncio.gather(*serving)
    finally:
        for client in clients:
            await client.aclose()
    return total / elapsed


async def wl_single(api: Api, queue: str, count: int, chained: bool) -> float:
    """One task at a time, 16 concurrent clients. ``chained``: a worker's loop, one request per task (each
    completion claims the next, as the bare endpoint's claim+complete does); else two (claim, complete)."""
    await api.fill(queue, count, 500)
    done = 0

    async def client(index: int) -> None:
        nonlocal done
        claims = await api.claim(queue, 1, 0, ref=f"single-{index}")
        while claims:
            if chained:
                claims = await api.complete_one(claims[0], claim_next=True)
            else:
                await api.complete_one(claims[0])
                claims = await api.claim(queue, 1, 0, ref=f"single-{index}")
            done += 1

    with api.per_task("single", "" if chained else "two_requests_", count):
        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        elapsed = time.perf_counter() - began
    return done / elapsed


async def wl_enqueue_one(api: Api, queue: str, count: int) -> float:
    await api.queue(queue)
    numbers = iter(range(count))

    async def creator() -> None:
        for i in numbers:
            await api.create_one(queue, {"n": i})

    with api.per_task("enqueue", "one_", count):
        began = time.perf_counter()
        await asyncio.gather(*(creator() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - began
    return count / elapsed


async def wl_enqueue_batch(api: Api, queue: str, count: int, chunk: int) -> float | None:
    await api.queue(queue)
    with api.per_task("enqueue", "batch_", count):
        began = time.perf_counter()
        done = 0
        while done < count:
            size = min(chunk, count - done)
            if not await api.create_batch(queue, size):
                return None
            done += size
        elapsed = time.perf_counter() - began
    return count / elapsed


async def wl_latency(api: Api, queue: str, count: int, rate: float, *, keyed: bool = False) -> dict[str, float]:
    """``rate`` tasks/s created one at a time; long-poll claimers; enqueue (create sent) → claim received.
    The first second's tasks (``warm_up``) are not measured, here as in the procrastinate peer. ``keyed``:
    every claim and completion under an ``Idempotency-Key`` of its own, as the SDK's worker calls."""
    await api.queue(queue)
    latencies: list[float] = []
    finished = asyncio.Event()
    calls = itertools.count()

    def key() -> str | None:
        return f"{queue}-{next(calls)}" if keyed else None

    async def claimer(index: int) -> None:
        claims: list[dict[str, Any]] = []
        while not finished.is_set():
            if not claims:
                claims = await api.claim(queue, 1, LATENCY_WAIT, ref=f"latency-{index}", key=key())
            now = time.time()
            for c in claims:
                if "sent" in c["task"]["data"]:
                    latencies.append((now - c["task"]["data"]["sent"]) * 1000)
            if len(latencies) >= count:
                finished.set()
            if claims:  # a worker's loop: the completion claims the next run, waiting for one if need be
                claims = await api.complete_one(claims[0], claim_next=True, key=key(), wait=LATENCY_WAIT)

    claimers = [asyncio.create_task(claimer(i)) for i in range(LATENCY_WORKERS)]
    await asyncio.sleep(0.5)
    began = time.perf_counter()
    creates = []
    warm = warm_up(rate)
    with collector_paused(), api.per_task("latency", "keyed_" if keyed else "", warm + count):
        for i in range(warm + count):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            data = {"n": i, "sent": time.time()} if i >= warm else {"n": i}
            creates.append(asyncio.create_task(api.create_one(queue, data)))
        created = await asyncio.gather(*creates)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), 30)
    finished.set()
    await asyncio.gather(*claimers, return_exceptions=True)
    measured = created[warm:]
    # A create answered in_progress was handed to a waiting claimer in its own commit; the rest were
    # claimed by a claimer that woke (or found them as its completion claimed the next).
    handed = sum(1 for task in measured if task["status"] == "in_progress")
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=0.0),
        "claimed": float(len(latencies)),
        "handed_pct": 100.0 * handed / max(len(measured), 1),
    }


async def wl_heartbeats(api: Api, queue: str, held: int, batch: int, *, batched: bool) -> float:
    """``held`` leases (claimed, never completed) renewed once each: one ``POST /v1/runs/{id}/heartbeat``
    per lease from 16 clients, or (``batched``) one ``POST /v1/runs/heartbeat`` per ``batch`` leases, as the
    SDK's worker renews the leases of the jobs it holds. Renewals/s, and the CPU per renewal."""
    await api.fill(queue, held, 500)
    claims = []
    while len(claims) < held:
        claims += await api.claim(queue, min(100, held - len(claims)), 0, ref=f"holder-{len(claims) // 100}")
    pending = iter(claims)

    async def one_by_one() -> None:
        for c in pending:
            reply = await api.http.post(f"/v1/runs/{c['run']['id']}/heartbeat", json={"claim_token": c["claim_token"]})
            if reply.status_code != 200:
                raise RuntimeError(f"heartbeat: {reply.status_code} {reply.text[:300]}")

    async def in_batches() -> None:
        for start in range(0, held, batch):
            body = {
                "runs": [
                    {"run_id": c["run"]["id"], "claim_token": c["claim_token"]} for c in claims[start : start + batch]
                ]
            }
            reply = await api.http.post("/v1/runs/heartbeat", json=body)
            if reply.status_code != 200 or any("error" in item for item in reply.json()["items"]):
                raise RuntimeError(f"batch heartbeat: {reply.status_code} {reply.text[:300]}")

    with api.per_task("heartbeat", "batch_" if batched else "one_", held):
        began = time.perf_counter()
        await (in_batches() if batched else asyncio.gather(*(one_by_one() for _ in range(CLIENTS))))
        elapsed = time.perf_counter() - began
    # Untimed: the leases given back. Left to run out, 5,000 of them expired together five minutes later,
    # in the middle of a later round's scenarios (the fan-out's third round: p99 200-280 ms, not ~50).
    for start in range(0, held, batch):
        await api.complete_many(claims[start : start + batch])
    return held / elapsed


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The load generator's garbage collector paused while it times latencies (as ``timeit`` does), here and
    in the procrastinate peer: a full collection in this process, whose heap holds every earlier
    scenario's objects, took ~40 ms and showed as the slowest tasks of a latency run."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def warm_up(rate: float) -> int:
    """Tasks offered, unmeasured, before a latency measurement: one second's worth. Each measurement starts
    settled (``settle``), and its VACUUM ANALYZE leaves every cached plan to be made again on each pooled
    connection's first use: in the first tenth of a second Workloom's 20 connections re-plan their
    statements (~1 ms each for the claim's and the completion's), which alone set its p99."""
    return max(1, round(rate))


async def wl_fanout(base: str, token: str, api: Api, pid: int, queue: str, sizes: Sizes) -> dict[str, float]:
    """``fanout_subscribers`` SSE streams on ``/v1/events/stream``; tasks created at 10/s; delivery latency =
    receipt minus the event's ``created_at``; the server's RSS sampled while it streams."""
    import psutil

    server = psutil.Process(pid)
    await api.queue(queue)
    subscribers = sizes.fanout_subscribers
    arrivals: list[tuple[float, bytes]] = []
    connected = 0
    all_connected = asyncio.Event()
    stop = asyncio.Event()
    received = 0
    async with aiohttp.ClientSession(
        base,
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=subscribers + 10),
        timeout=aiohttp.ClientTimeout(total=None, connect=60),
    ) as client:

        async def subscriber() -> None:
            nonlocal connected, received
            async with client.get("/v1/events/stream", params={"types": "task.created"}) as response:
                connected += 1
                if connected >= subscribers:
                    all_connected.set()
                async for raw in response.content:
                    if stop.is_set():
                        return
                    if raw.startswith(b"data:"):
                        # Parsed after the run: the generator's own work would otherwise add to the latency.
                        arrivals.append((time.time(), raw))
                        received += 1

        streams = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
        await asyncio.wait_for(all_connected.wait(), 120)
        await asyncio.sleep(0.5)
        rss = [resident(server)]
        # A thousand streams are ~200k objects here too: keep this process's full collections (100+ ms
        # pauses in the middle of receiving) out of what is measured.
        gc.collect()
        gc.freeze()
        gc.disable()
        arrivals.clear()
        received = 0
        for i in range(sizes.fanout_tasks):
            await api.create_one(queue, {"n": i})
            rss.append(resident(server))
            await asyncio.sleep(0.1)
        expected = subscribers * sizes.fanout_tasks
        deadline = time.monotonic() + 30
        while received < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            rss.append(resident(server))
        stop.set()
        gc.enable()
        gc.unfreeze()
        for s in streams:
            s.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    latencies = []
    for arrived, raw in arrivals:
        created = datetime.fromisoformat(json.loads(raw[5:])["created_at"].replace("Z", "+00:00")).timestamp()
        latencies.append((arrived - created) * 1000)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "delivered_pct": 100.0 * received / expected,
        "rss_mb": max(rss) / 2**20,
    }


async def load_backlog(database_url: str, token: str, queue: str, count: int) -> None:
    """``count`` ready tasks with queued runs in ``queue``, inserted through the store (batches of 5,000)."""
    from bench.dashboard import _run, _task, vacuum
    from workloom.domain.clock import SystemClock
    from workloom.engine.service import Workloom
    from workloom.store import queues as queue_store
    from workloom.store import runs as run_store
    from workloom.store import tasks as task_store
    from workloom.store import workspaces as workspace_store
    from workloom.store.fast import write_all

    wl = Workloom.from_url(database_url, SystemClock())
    try:
        principal = await wl.access.authenticate(token)
        workspace = principal.workspace_id
        rng = random.Random(count)
        now = wl.clock.now()
        async with wl.db.transaction() as conn:
            found = await queue_store.queue_get_by_name(conn, workspace, queue)
            assert found is not None, queue
            last = await workspace_store.workspace_next_task_numbers(conn, workspace, count)
        first = last - count + 1
        for start in range(0, count, 5000):
            tasks = [_task(workspace, first + n, now, rng, found) for n in range(start, min(count, start + 5000))]
            runs = [_run(t, found, "queued") for t in tasks]
            async with wl.db.transaction() as conn:
                await write_all(conn, [*task_store.task_inserts(tasks), *run_store.run_inserts(runs)])
        await vacuum(wl)
    finally:
        await wl.stop()


async def wl_backlog_claims(api: Api, queue: str, claims: int) -> float:
    """p50 of ``claims`` sequential claim requests (limit 1) in a queue with a backlog; each run is completed."""
    samples = []
    for _ in range(claims):
        began = time.perf_counter()
        got = await api.claim(queue, 1, 0, ref="backlog")
        samples.append((time.perf_counter() - began) * 1000)
        for c in got:
            await api.complete_one(c)
    return percentile(samples, 50)


# -- the raw and bare peers ------------------------------------------------------------------------------------


async def _pg(url: str, *statements: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        result = None
        for statement in statements:
            if statement.lstrip().upper().startswith("SELECT"):
                result = await conn.fetchval(statement)
            else:
                await conn.execute(statement)
        return result
    finally:
        await conn.close()


def settle(url: str) -> None:
    """Start a measurement from the state every other one starts from: dirty pages written (CHECKPOINT) and
    the dead rows of what ran before vacuumed, statistics fresh (VACUUM ANALYZE). Without it, whichever
    scenario (or peer) met autovacuum or a checkpoint lost, and the peers' figures swung most: pgqueuer's
    drain ran at 784, 864 and 2,250 jobs/s in one suite. CHECKPOINT needs a superuser (or
    pg_checkpoint); without one only the vacuum is done."""
    import asyncpg

    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_pg(url, "CHECKPOINT"))
    asyncio.run(_pg(url, "VACUUM ANALYZE"))


def pgbench_ceiling(url: str, seconds: int) -> float:
    rows = max(20_000, seconds * 20_000)
    asyncio.run(
        _pg(
            url,
            "DROP TABLE IF EXISTS pgb_jobs",
            "CREATE TABLE pgb_jobs (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'queued', "
            "payload jsonb, claimed_at timestamptz, done_at timestamptz)",
            f"INSERT INTO pgb_jobs (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, {rows}) g",
            "CREATE INDEX pgb_jobs_queued ON pgb_jobs (id) WHERE status = 'queued'",
            "VACUUM ANALYZE pgb_jobs",
        )
    )
    pgbench = shutil.which("pgbench") or "/usr/bin/pgbench"
    out = subprocess.run(
        [pgbench, "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(seconds), "-f", str(PEERS / "pgbench_claim.sql"), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    asyncio.run(_pg(url, "DROP TABLE IF EXISTS pgb_jobs"))
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"unexpected pgbench output: {out[-1000:]}")
    return float(match.group(1))


async def bare_single(base: str, url: str, count: int, meter: Meter, *, chained: bool) -> float:
    """The bare endpoint, the same way as ``wl_single``: one request per job (``chained``) or two; its costs
    per job as Workloom's (``bare_cpu_us_server``, …)."""
    await _pg(
        url,
        "DELETE FROM bare_jobs",
        f"INSERT INTO bare_jobs (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, {count}) g",
        "ANALYZE bare_jobs",
    )
    done = 0
    http = Http(base)
    try:

        async def client() -> None:
            nonlocal done
            claimed = (await http.post("/claim")).json()
            while claimed["job"] is not None:
                body = {"claim_token": claimed["claim_token"], "claim_next": chained}
                response = await http.post(f"/jobs/{claimed['job']['id']}/complete", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"bare complete: {response.status_code} {response.text[:300]}")
                claimed = response.json()["next"] if chained else (await http.post("/claim")).json()
                done += 1

        with meter.per_task("single", "bare_" if chained else "bare_two_requests_", count):
            began = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
            elapsed = time.perf_counter() - began
        return done / elapsed
    finally:
        await http.aclose()


# -- the run -----------------------------------------------------------------------------------------------------


def record_peer(suite: Suite, scenario: str, name: str, result: dict[str, Any] | None) -> None:
    """A peer script's rate, and what each of its jobs cost (``bench/peers/costs.py``) where it says."""
    if result is None:
        return
    suite.record(scenario, name, result["per_second"], "jobs/s")
    for key in ("cpu_us_postgres", "cpu_us_client", "wal_bytes"):
        if key in result:
            suite.record(scenario, f"{name}_{key}", result[key], "B/job" if key == "wal_bytes" else "µs/job")


def behind(rate: float) -> float:
    """The median latency, in ms, past which a round of the latency scenario ran behind the rate offered: ten
    arrivals' worth (50 ms at 200/s). A worker that keeps up starts each job within a few milliseconds; one
    whose median job waited for ten others had a standing queue, and its p99 is the queue's length."""
    return 10 * 1000 / rate


def record_kept_up(suite: Suite, peer: str, result: dict[str, Any] | None, rate: float) -> None:
    """A peer's latency round: its p99 as ``<peer>_kept_up_p99_ms`` (what the p99 target compares with) where it
    kept up with ``rate``; else a note, and no figure for the target from that round."""
    if result is None:
        return
    if result["p50_ms"] <= behind(rate):
        suite.record("latency", f"{peer}_kept_up_p99_ms", result["p99_ms"], "ms")
        return
    suite.note(
        f"latency: {peer} fell behind the {rate:.0f} jobs/s offered in some round (its p50 over "
        f"{behind(rate):.0f} ms): such a round's p99 is its queue's length, so the p99 target is compared with "
        "its rounds that kept up"
    )


def _attempt(suite: Suite, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as error:  # a peer failing must not lose the rest of the run
        suite.note(f"{what} failed: {str(error).strip()[:400]}")
        return None


def run_postgres(url: str, wanted: list[str], suite: Suite, python: Path | None) -> None:
    token = "wl_bench_" + secrets.token_urlsafe(16)
    sizes = suite.sizes
    if python is not None:
        for script in ("pgqueuer_peer.py", "procrastinate_peer.py"):
            run_peer(python, script, url, "setup")
    raise_fd_limit()

    def attempt(what: str, fn: Callable[[], Any]) -> Any:
        settle(url)
        return _attempt(suite, what, fn)

    with workloom_server(url, token, suite.server_processes) as wl:

        def on_api(fn: Callable[[Api], Awaitable[Any]], profile_as: str | None = None, *, settled: bool = True) -> Any:
            async def go() -> Any:
                api = Api(wl.base, token)
                api.meter = Meter(suite, wl.process.pid, database_url=url)
                try:
                    return await fn(api)
                finally:
                    await api.close()

            if settled:
                settle(url)
            if profile_as is None:
                return asyncio.run(go())
            with sampled(suite, wl.process.pid, f"{profile_as}-{run}"):
                return asyncio.run(go())

        for run in range(suite.runs):
            tag = f"{run}-{secrets.token_hex(2)}"
            if "drain" in wanted:
                suite.record(
                    "drain",
                    "workloom",
                    on_api(lambda a: wl_drain(wl.base, token, a, f"drain-{tag}", sizes, suite), "drain"),  # noqa: B023
                    "tasks/s",
                )
                suite.record(
                    "drain",
                    "workloom_worker",
                    on_api(lambda a: wl_drain_worker(wl.base, token, a, f"drainw-{tag}", sizes), "drain_worker"),  # noqa: B023
                    "tasks/s",
                )
                if python is not None:
                    r = attempt(
                        "pgqueuer drain", lambda: run_peer(python, "pgqueuer_peer.py", url, "drain", sizes.drain)
                    )
                    record_peer(suite, "drain", "pgqueuer", r)
                    r = attempt(
                        "procrastinate drain",
                        lambda: run_peer(python, "procrastinate_peer.py", url, "drain", sizes.drain_procrastinate),
                    )
                    record_peer(suite, "drain", "procrastinate", r)
                if suite.peers:
                    suite.record(
                        "drain",
                        "pgbench_ceiling",
                        attempt("pgbench", lambda: pgbench_ceiling(url, sizes.pgbench_seconds)),
                        "jobs/s",
                    )
            if "single" in wanted:
                suite.record(
                    "single",
                    "workloom",
                    on_api(lambda a: wl_single(a, f"single-{tag}", sizes.single, True), "single"),  # noqa: B023
                    "tasks/s",
                )
                suite.record(
                    "single",
                    "workloom_two_requests",
                    on_api(lambda a: wl_single(a, f"single2-{tag}", sizes.single, False)),  # noqa: B023
                    "tasks/s",
                )
                if suite.peers:

                    def bare() -> tuple[float, float]:
                        with bare_server(url) as b:
                            meter = Meter(suite, b.process.pid, database_url=url)
                            chained = asyncio.run(bare_single(b.base, url, sizes.single, meter, chained=True))
                            return chained, asyncio.run(bare_single(b.base, url, sizes.single, meter, chained=False))

                    figures = attempt("bare endpoint", bare) or (None, None)
                    suite.record("single", "bare_fastapi_asyncpg", figures[0], "tasks/s")
                    suite.record("single", "bare_two_requests", figures[1], "tasks/s")
            if "enqueue" in wanted:
                suite.record(
                    "enqueue",
                    "workloom_one",
                    on_api(lambda a: wl_enqueue_one(a, f"enq-{tag}", sizes.enqueue_one), "enqueue_one"),  # noqa: B023
                    "tasks/s",
                )
                batch = on_api(
                    lambda a: wl_enqueue_batch(a, f"enqb-{tag}", sizes.enqueue_batch, sizes.enqueue_chunk),  # noqa: B023
                    "enqueue_batch",
                )
                if batch is None:
                    suite.note("enqueue: the server has no POST /v1/tasks/batch, so there is no Workloom batch figure")
                suite.record("enqueue", "workloom_batch", batch, "tasks/s")
                if python is not None:
                    r = attempt(
                        "pgqueuer enqueue",
                        lambda: run_peer(python, "pgqueuer_peer.py", url, "enqueue", sizes.enqueue_one),
                    )
                    record_peer(suite, "enqueue", "pgqueuer_one", r)
                    r = attempt(
                        "pgqueuer batch",
                        lambda: run_peer(python, "pgqueuer_peer.py", url, "batch", sizes.enqueue_batch),
                    )
                    record_peer(suite, "enqueue", "pgqueuer_batch", r)
                    r = attempt(
                        "procrastinate batch",
                        lambda: run_peer(python, "procrastinate_peer.py", url, "batch", sizes.enqueue_batch),
                    )
                    record_peer(suite, "enqueue", "procrastinate_batch", r)
            if "latency" in wanted:
                lat = on_api(lambda a: wl_latency(a, f"lat-{tag}", sizes.latency, sizes.latency_rate), "latency")  # noqa: B023
                for key in ("p50_ms", "p99_ms", "max_ms"):
                    suite.record("latency", f"workloom_{key}", lat[key], "ms")
                suite.record("latency", "workloom_handed_pct", lat["handed_pct"], "%")
                keyed = on_api(
                    lambda a: wl_latency(a, f"latk-{tag}", sizes.latency, sizes.latency_rate, keyed=True),  # noqa: B023
                    "latency_keyed",
                )
                for key in ("p50_ms", "p99_ms", "handed_pct"):
                    suite.record("latency", f"workloom_keyed_{key}", keyed[key], "%" if key == "handed_pct" else "ms")
                if lat["claimed"] < sizes.latency:
                    suite.note(f"latency: only {lat['claimed']:.0f}/{sizes.latency} tasks were claimed in time")
                if python is not None:
                    r = attempt(
                        "procrastinate latency",
                        lambda: run_peer(
                            python,
                            "procrastinate_peer.py",
                            url,
                            "latency",
                            sizes.latency,
                            sizes.latency_rate,
                            warm_up(sizes.latency_rate),
                        ),
                    )
                    for key in ("p50_ms", "p99_ms", "max_ms"):
                        suite.record("latency", f"procrastinate_{key}", r and r[key], "ms")
                    record_kept_up(suite, "procrastinate", r, sizes.latency_rate)
            if "heartbeat" in wanted:
                for batched, name in ((False, "one"), (True, "batch")):
                    renew = functools.partial(
                        wl_heartbeats,
                        queue=f"hb-{name}-{tag}",
                        held=sizes.heartbeat_held,
                        batch=sizes.heartbeat_batch,
                        batched=batched,
                    )
                    suite.record("heartbeat", f"renewals_{name}", on_api(renew, f"heartbeat_{name}"), "leases/s")
            if "fanout" in wanted:
                fan = on_api(lambda a: wl_fanout(wl.base, token, a, wl.process.pid, f"fan-{tag}", sizes), "fanout")  # noqa: B023
                suite.record("fanout", "p50_ms", fan["p50_ms"], "ms")
                suite.record("fanout", "p99_ms", fan["p99_ms"], "ms")
                suite.record("fanout", "delivered_pct", fan["delivered_pct"], "%")
                suite.record("fanout", "server_rss_mb", fan["rss_mb"], "MB")
                suite.record("fanout", "subscribers", sizes.fanout_subscribers, "")
        if "backlog" in wanted:
            for size in sizes.backlog:
                queue = f"backlog-{size}"
                on_api(lambda a: a.queue(queue), settled=False)  # noqa: B023
                asyncio.run(load_backlog(url, token, queue, size))
                for _ in range(suite.runs):
                    p50 = on_api(lambda a: wl_backlog_claims(a, queue, sizes.backlog_claims), settled=False)  # noqa: B023
                    suite.record("backlog", f"claim_p50_ms_{label(size)}", p50, "ms")


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k" if size >= 1000 else str(size)


def run_sqlite(suite: Suite) -> None:
    token = "wl_bench_" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="workloom-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        with workloom_server(url, token) as wl:
            for run in range(suite.runs):

                async def go(run: int = run) -> tuple[float, float]:
                    api = Api(wl.base, token)
                    api.meter = Meter(suite, wl.process.pid, database_url=None, scenario="sqlite")
                    try:
                        with sampled(suite, wl.process.pid, f"sqlite_drain-{run}"):
                            drain = await wl_drain(wl.base, token, api, f"sq-drain-{run}", suite.sizes, suite)
                        with sampled(suite, wl.process.pid, f"sqlite_single-{run}"):
                            single = await wl_single(api, f"sq-single-{run}", suite.sizes.single, True)
                        return drain, single
                    finally:
                        await api.close()

                drain, single = asyncio.run(go())
                suite.record("sqlite", "drain", drain, "tasks/s")
                suite.record("sqlite", "single", single, "tasks/s")


# -- the targets and the report ------------------------------------------------------------------------------------


@dataclass
class Target:
    scenario: str
    text: str
    ours: str  # scenario.metric
    other: str | None  # scenario.metric, or None for an absolute bound
    required: float  # ours / other ≥ required (higher is better), or ours ≤ required * other (lower)
    lower_is_better: bool = False


TARGETS = [
    Target("drain", "≥ 1.5 × pgqueuer", "drain.workloom", "drain.pgqueuer", 1.5),
    Target("drain", "≥ 10 × procrastinate", "drain.workloom", "drain.procrastinate", 10.0),
    Target("single", "≥ 0.8 × bare FastAPI+asyncpg", "single.workloom", "single.bare_fastapi_asyncpg", 0.8),
    Target("enqueue", "one-at-a-time ≥ 1.3 × pgqueuer", "enqueue.workloom_one", "enqueue.pgqueuer_one", 1.3),
    Target(
        "enqueue", "batch ≥ 1.0 × procrastinate batch", "enqueue.workloom_batch", "enqueue.procrastinate_batch", 1.0
    ),
    Target("latency", "p50 ≤ 5 ms", "latency.workloom_p50_ms", None, 5.0, lower_is_better=True),
    Target(
        "latency",
        "p99 ≤ procrastinate p99 (kept up)",
        "latency.workloom_p99_ms",
        "latency.procrastinate_kept_up_p99_ms",
        1.0,
        lower_is_better=True,
    ),
    Target(
        "backlog",
        "claim p50 at 1M ≤ 1.5 × at 10k",
        "backlog.claim_p50_ms_1M",
        "backlog.claim_p50_ms_10k",
        1.5,
        lower_is_better=True,
    ),
    Target("fanout", "delivery p99 ≤ 100 ms", "fanout.p99_ms", None, 100.0, lower_is_better=True),
    Target("fanout", "server RSS ≤ 300 MB", "fanout.server_rss_mb", None, 300.0, lower_is_better=True),
    Target("sqlite", "drain ≥ 1.0 × PostgreSQL drain", "sqlite.drain", "drain.workloom", 1.0),
]


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _median(suite: Suite, ref: str) -> float | None:
    values = _values(suite, ref)
    return statistics.median(values) if values else None


def _values(suite: Suite, ref: str) -> list[float]:
    scenario, metric = ref.split(".", 1)
    return suite.figures.get(scenario, {}).get(metric, [])


def _met(t: Target, ratio: float) -> bool:
    return ratio <= t.required if t.lower_is_better else ratio >= t.required


def round_ratios(suite: Suite, t: Target) -> list[float]:
    """The target's ratio in each round, where both sides have a figure from every round: each round runs
    Workloom and then its peer, a minute apart at most, so a round's ratio is judged on one state of the
    machine, which drifts by a quarter within an hour. Empty where the rounds cannot be paired (a side
    failed in some round, or kept only some: the latency peer's rounds that kept up)."""
    ours = _values(suite, t.ours)
    other = _values(suite, t.other) if t.other else [1.0] * len(ours)
    if len(ours) != suite.runs or len(other) != suite.runs or 0 in other:
        return []
    return [round(a / b, 3) for a, b in zip(ours, other, strict=True)]


def evaluate(suite: Suite) -> list[dict[str, Any]]:
    rows = []
    for t in TARGETS:
        ours = _median(suite, t.ours)
        other = _median(suite, t.other) if t.other else 1.0
        rounds = round_ratios(suite, t)
        row: dict[str, Any] = {
            "scenario": t.scenario,
            "target": t.text,
            "ours": ours,
            "peer": other if t.other else None,
            "rounds": rounds,
            "rounds_met": sum(_met(t, r) for r in rounds),
        }
        if ours is None or other is None or other == 0:
            row.update(ratio=None, status="n/a")
        else:
            ratio = ours / other
            row.update(
                ratio=round(ratio, 3),
                required=t.required,
                score=_score(t, ratio),
                round_scores=[_score(t, r) for r in rounds],
                status="met" if _met(t, ratio) else "missed",
            )
        rows.append(row)
    return rows


def _score(t: Target, ratio: float) -> float:
    """How far from the target: ≥ 1 means met, for either direction."""
    score = (t.required / ratio if ratio else float("inf")) if t.lower_is_better else ratio / t.required
    return round(score, 3)


@dataclass(frozen=True)
class Compared:
    """A Workloom figure's costs beside its peer's: ``ours`` and ``theirs`` prefix the cost metrics
    (``wal_bytes``, ``cpu_us_postgres``) in ``scenario``."""

    scenario: str
    peer: str
    ours: str
    theirs: str


COMPARED = [
    Compared("drain", "pgqueuer", "", "pgqueuer_"),
    Compared("single", "bare endpoint", "", "bare_"),
    Compared("enqueue", "pgqueuer, one at a time", "one_", "pgqueuer_one_"),
    Compared("enqueue", "procrastinate, batch", "batch_", "procrastinate_batch_"),
]
COSTS = ("wal_bytes", "cpu_us_postgres")


def costs_against_peers(suite: Suite) -> list[dict[str, Any]]:
    """Per comparison the suite measured both sides of: each side's median WAL bytes and PostgreSQL CPU a
    task, and Workloom's over the peer's."""
    rows = []
    for c in COMPARED:
        row: dict[str, Any] = {"scenario": c.scenario, "peer": c.peer}
        for key in COSTS:
            ours = _median(suite, f"{c.scenario}.{c.ours}{key}")
            theirs = _median(suite, f"{c.scenario}.{c.theirs}{key}")
            row[key] = {"workloom": ours, "peer": theirs, "times": round(ours / theirs, 2) if ours and theirs else None}
        if any(row[key]["workloom"] is not None and row[key]["peer"] is not None for key in COSTS):
            rows.append(row)
    return rows


def _commit() -> str | None:
    """The checkout's commit, with ``+`` when it has changes: which code a table measured."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def machine(url: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text()
        kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
        info["memory_gb"] = round(kb / 2**20, 1)
    if url and url.startswith("postgresql"):
        with contextlib.suppress(Exception):
            info["postgresql"] = asyncio.run(_pg(url, "SELECT version()"))
    return info


def print_report(suite: Suite, targets: list[dict[str, Any]], file: TextIO | None = None) -> None:
    """The figures and targets as tables, on the terminal or, plain, into ``file``."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150) if file is None else Console(width=150, file=file, color_system=None)
    table = Table(title=f"Workloom bench: figures over {suite.runs} run(s)")
    for column in ("scenario", "measure", "min", "median", "max", "unit"):
        table.add_column(column, justify="right" if column in ("min", "median", "max") else "left")
    for scenario, metrics in suite.figures.items():
        for metric, values in metrics.items():
            s = summary(values)
            table.add_row(
                scenario,
                metric,
                *(f"{s[k]:,.1f}" for k in ("min", "median", "max")),
                suite.units[f"{scenario}.{metric}"],
            )
    console.print(table)
    ratios = Table(title="Targets (medians, same run; and round by round)")
    for column in ("scenario", "target", "workloom", "peer", "ratio", "status", "rounds met", "each round"):
        ratios.add_column(column)
    colors = {"met": "green", "missed": "red", "n/a": "yellow"}
    for row in targets:
        rounds = row.get("rounds") or []
        ratios.add_row(
            row["scenario"],
            row["target"],
            "-" if row["ours"] is None else f"{row['ours']:,.1f}",
            "-" if row["peer"] is None else f"{row['peer']:,.1f}",
            "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
            f"[{colors[row['status']]}]{row['status']}[/]",
            f"{row['rounds_met']} of {len(rounds)}" if rounds else "-",
            " / ".join(f"{r:.2f}" for r in rounds) or "-",
        )
    console.print(ratios)
    costs = costs_against_peers(suite)
    if costs:
        table = Table(title="What a task costs the database (medians, same run)")
        for column in ("scenario", "against", "WAL B/task", "peer", "×", "PostgreSQL µs/task", "peer", "× "):
            table.add_column(column, justify="left" if column in ("scenario", "against") else "right")
        for row in costs:
            cells = []
            for key in COSTS:
                figure = row[key]
                cells += [_shown(figure["workloom"]), _shown(figure["peer"]), _shown(figure["times"], "{:.1f}")]
            table.add_row(row["scenario"], row["peer"], *cells)
        console.print(table)
    for text in suite.notes:
        console.print(f"note: {text}")


def _shown(value: float | None, form: str = "{:,.0f}") -> str:
    return "-" if value is None else form.format(value)


def write_png(path: Path, targets: list[dict[str, Any]], costs: list[dict[str, Any]] | None = None) -> bool:
    """The targets as bars (achieved ÷ required, ≥ 1 met); below them, where ``costs`` has any, each
    comparison's WAL and PostgreSQL CPU a task, Workloom's beside its peer's."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("--png: matplotlib is not installed (pip install -e '.[bench]'); no chart written", file=sys.stderr)
        return False
    rows = [r for r in targets if r.get("score") is not None]
    labels = [f"{r['scenario']}: {r['target']}" for r in rows]
    scores = [r["score"] for r in rows]
    costs = costs or []
    height = 0.45 * max(4, len(rows)) + 1
    if costs:
        fig = plt.figure(figsize=(10, height + 0.5 * len(costs) + 2))
        grid = fig.add_gridspec(2, 2, height_ratios=[height, 0.5 * len(costs) + 1.5])
        ax = fig.add_subplot(grid[0, :])
        for column, (key, title) in enumerate(
            (("wal_bytes", "WAL bytes a task"), ("cpu_us_postgres", "PostgreSQL µs a task"))
        ):
            _cost_bars(fig.add_subplot(grid[1, column]), costs, key, title, show_labels=column == 0)
    else:
        fig, ax = plt.subplots(figsize=(10, height))
    ax.barh(labels, scores, color=["tab:green" if s >= 1 else "tab:red" for s in scores])
    rounds = [(position, score) for position, row in enumerate(rows) for score in row.get("round_scores") or []]
    if rounds:  # each round's own ratio, over the bar of the medians'
        ax.scatter([s for _, s in rounds], [p for p, _ in rounds], color="black", s=14, zorder=3, label="one round")
        ax.legend(loc="lower right", fontsize="small")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 0.6, not 6e-1 written as a power of ten
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("achieved / required (≥ 1: target met)")
    ax.invert_yaxis()
    ax.set_title("Workloom bench: targets against peers in the same run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _cost_bars(ax: Any, costs: list[dict[str, Any]], key: str, title: str, *, show_labels: bool) -> None:
    labels = [f"{row['scenario']}: vs {row['peer']}" for row in costs]
    positions = range(len(costs))
    ours = [row[key]["workloom"] or 0 for row in costs]
    theirs = [row[key]["peer"] or 0 for row in costs]
    ax.barh([p - 0.2 for p in positions], ours, height=0.4, color="tab:blue", label="Workloom")
    ax.barh([p + 0.2 for p in positions], theirs, height=0.4, color="tab:gray", label="peer")
    ax.set_yticks(list(positions), labels if show_labels else [""] * len(costs))
    ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL database to use as given "
        f"(default: a fresh database on {DEFAULT_POSTGRES}, dropped at the end)",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --quick)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, peers only if already installed")
    parser.add_argument("--full", action="store_true", help="also the 1M-task backlog")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the task counts (not the backlogs)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="tasks/s offered in the latency scenario (default 200, the issue's; a slower machine than the "
        "targets were set on saturates there, and the figure is then its queue)",
    )
    parser.add_argument("--no-peers", action="store_true", help="Workloom only (no pgqueuer, procrastinate, pgbench…)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures, targets and machine as JSON")
    parser.add_argument("--png", type=Path, default=None, help="write a chart of the targets (needs matplotlib)")
    parser.add_argument("--text", type=Path, default=None, help="write the printed tables as plain text")
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample the server with py-spy during each scenario, into DIR"
    )
    parser.add_argument("--profile-format", choices=["flamegraph", "raw", "speedscope"], default="flamegraph")
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="Workloom server processes on PostgreSQL (workloom serve --workers N; default 1)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="measure nothing: judge and render the figures of an earlier --json report again (--json, --png, --text)",
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return rerender(json.loads(args.from_json.read_text()), args.json, args.png, args.text)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS}")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.scale != 1.0:
        for name in ("drain", "drain_procrastinate", "single", "enqueue_one", "enqueue_batch", "latency"):
            setattr(sizes, name, max(10, int(getattr(sizes, name) * args.scale)))
    if args.latency_rate is not None:
        sizes.latency_rate = args.latency_rate
    if args.full and not args.quick:
        sizes.backlog = (*sizes.backlog, 1_000_000)
    suite = Suite(runs=args.runs or (1 if args.quick else 3), sizes=sizes, peers=not args.no_peers, quick=args.quick)
    suite.profile, suite.profile_format = args.profile, args.profile_format
    if args.server_processes < 1:
        parser.error("--server-processes must be at least 1")
    suite.server_processes = args.server_processes
    suite.modes["server_processes"] = args.server_processes
    if "backlog" in wanted and 1_000_000 not in sizes.backlog:
        suite.note("backlog: the 1M-task figure needs --full, so the 1M target is n/a")
    if "fanout" in wanted:
        raise_fd_limit()
    python = None
    if suite.peers and {"drain", "enqueue", "latency"} & set(wanted):
        python = peers_python(install=not args.quick)
        if python is None:
            suite.note(
                f"pgqueuer/procrastinate skipped: no peers virtualenv at {PEERS_VENV} (--quick does not build one)"
            )
    started_at = time.time()
    pg_wanted = [s for s in wanted if s != "sqlite"]
    url_used = args.database_url or DEFAULT_POSTGRES
    if pg_wanted:
        with (
            bench_database(args.database_url or DEFAULT_POSTGRES)
            if not args.database_url
            else contextlib.nullcontext(args.database_url) as url
        ):
            run_postgres(url, pg_wanted, suite, python)
    if "sqlite" in wanted:
        run_sqlite(suite)
    if "drain_completion" in suite.modes:
        suite.note(f"completion in drain: {suite.modes['drain_completion']}")
    if suite.server_processes > 1:
        suite.note(f"Workloom on PostgreSQL: {suite.server_processes} server processes (workloom serve --workers)")
    targets = evaluate(suite)
    print_report(suite, targets)
    report = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": _commit(),
        "seconds": round(time.time() - started_at, 1),
        "runs": suite.runs,
        "quick": args.quick,
        "machine": machine(url_used),
        "sizes": {k: v for k, v in vars(sizes).items()},
        "modes": suite.modes,
        "figures": {
            scenario: {
                m: {"values": v, **summary(v), "unit": suite.units[f"{scenario}.{m}"]} for m, v in metrics.items()
            }
            for scenario, metrics in suite.figures.items()
        },
        "targets": targets,
        "costs": costs_against_peers(suite),
        "notes": suite.notes,
    }
    write_outputs(suite, report, args.json, args.png, args.text)
    return 0


def write_outputs(
    suite: Suite, report: dict[str, Any], json_path: Path | None, png: Path | None, text: Path | None
) -> None:
    if json_path:
        json_path.write_text(json.dumps(report, indent=2, default=str))
    if png:
        write_png(png, report["targets"], report["costs"])
    if text:
        with text.open("w") as out:
            print_report(suite, report["targets"], file=out)


def suite_of(report: dict[str, Any]) -> Suite:
    """The figures of an earlier report, as the suite that measured them held them."""
    known = {f.name for f in dataclasses.fields(Sizes)}
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in report["sizes"].items()}
    sizes = Sizes(**{k: v for k, v in given.items() if k in known})
    suite = Suite(runs=report["runs"], sizes=sizes, peers=True, quick=report["quick"])
    for scenario, metrics in report["figures"].items():
        for metric, figure in metrics.items():
            for value in figure["values"]:
                suite.record(scenario, metric, value, figure["unit"])
    suite.notes = list(report.get("notes", []))
    suite.modes = dict(report.get("modes", {}))
    return suite


def rerender(report: dict[str, Any], json_path: Path | None, png: Path | None, text: Path | None) -> int:
    """An earlier report's figures judged by the targets and rules of this code, printed and written again:
    a change to how the suite judges or draws needs no new hour of measuring."""
    suite = suite_of(report)
    targets = evaluate(suite)
    print_report(suite, targets)
    report = {**report, "targets": targets, "costs": costs_against_peers(suite)}
    write_outputs(suite, report, json_path, png, text)
    return 0
