"""Throughput of the task lifecycle over HTTP: create → claim → complete.

    python -m bench.lifecycle --tasks 2000 --workers 8 [--database-url URL] [--batch 10] [--json]

Starts a Workloom server process on a database of its own (a fresh SQLite file in a temp directory by
default; with a PostgreSQL URL, a new database on that server, dropped at the end), creates ``--tasks``
tasks with ``--workers`` concurrent clients, then drains the queue with ``--workers`` claimers that
claim up to ``--batch`` runs at a time and complete each one. Prints tasks/s for enqueue and drain and
the claim latency (p50/p99, measured by the client, claims that returned work only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

QUEUE = "bench"
BOOT_TIMEOUT = 60.0
IDLE_TIMEOUT = 30.0  # seconds without a completion before the drain gives up


@dataclass
class Result:
    tasks: int
    workers: int
    batch: int
    database: str
    enqueue_seconds: float = 0.0
    enqueue_tasks_per_second: float = 0.0
    drain_seconds: float = 0.0
    drain_tasks_per_second: float = 0.0
    claim_latency_ms_p50: float = 0.0
    claim_latency_ms_p99: float = 0.0
    claim_requests: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)


# -- the database and the server -------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(url: str | None) -> Iterator[str]:
    """A fresh database: a SQLite file in a temp dir, or a new database on the given PostgreSQL server."""
    if url is None or url.startswith("sqlite"):
        if url is not None:
            yield url
            return
        with tempfile.TemporaryDirectory(prefix="workloom-bench-") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…")
    admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"wl_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _postgres(admin, f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        _postgres(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres(admin_url: str, statement: str) -> None:
    import asyncpg

    async def execute() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(database_url: str, token: str) -> Iterator[str]:
    """A server process on ``database_url``; yields its base URL and stops it (SIGTERM) afterwards."""
    port = _free_port()
    env = {
        **os.environ,
        "WORKLOOM_DATABASE_URL": database_url,
        "WORKLOOM_BOOTSTRAP_TOKEN": token,
        "WORKLOOM_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workloom.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(process, base, log)
            yield base
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base: str, log: Any) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited with {process.returncode}:\n{log.read().decode(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"the server was not ready after {BOOT_TIMEOUT:.0f}s")


# -- the workload ----------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def enqueue(client: httpx.AsyncClient, tasks: int, workers: int, result: Result) -> None:
    numbers = iter(range(tasks))

    async def creator() -> None:
        for i in numbers:  # the workers share one iterator: each number is taken once
            response = await client.post("/v1/tasks", json={"title": f"bench {i}", "queue": QUEUE, "data": {"n": i}})
            if response.status_code != 201:
                result.errors.append(f"create: {response.status_code} {response.text[:200]}")

    await asyncio.gather(*(creator() for _ in range(workers)))


async def drain(client: httpx.AsyncClient, tasks: int, workers: int, batch: int, result: Result) -> list[float]:
    """Claim and complete until every task is done; the drain time ends at the last completion (claimers
    still waiting in a long-poll then are not counted)."""
    latencies: list[float] = []
    done = 0
    started = last_progress = time.perf_counter()

    async def claimer(index: int) -> None:
        nonlocal done, last_progress
        body = {"worker": {"kind": "automation", "ref": f"bench-{index}"}, "limit": batch, "wait_seconds": 1}
        while done < tasks and time.perf_counter() - last_progress < IDLE_TIMEOUT:
            sent = time.perf_counter()
            response = await client.post(f"/v1/queues/{QUEUE}/claim", json=body)
            elapsed = time.perf_counter() - sent
            result.claim_requests += 1
            if response.status_code != 200:
                result.errors.append(f"claim: {response.status_code} {response.text[:200]}")
                continue
            claims = response.json()["claims"]
            if claims:
                latencies.append(elapsed * 1000)
            for claim in claims:
                completed = await client.post(
                    f"/v1/runs/{claim['run']['id']}/complete", json={"claim_token": claim["claim_token"]}
                )
                if completed.status_code == 200:
                    done += 1
                    last_progress = time.perf_counter()
                else:
                    result.errors.append(f"complete: {completed.status_code} {completed.text[:200]}")

    await asyncio.gather(*(claimer(i) for i in range(workers)))
    result.drain_seconds = last_progress - started
    return latencies


async def run_workload(base: str, token: str, tasks: int, workers: int, batch: int, result: Result) -> None:
    limits = httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers * 2)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        response = await client.post("/v1/queues", json={"name": QUEUE})
        if response.status_code != 201:
            raise SystemExit(f"could not create the queue: {response.status_code} {response.text}")

        started = time.perf_counter()
        await enqueue(client, tasks, workers, result)
        result.enqueue_seconds = time.perf_counter() - started

        latencies = await drain(client, tasks, workers, batch, result)

        response = await client.get(
            "/v1/tasks", params={"queue": QUEUE, "status": "completed", "count": "true", "limit": 1}
        )
        result.completed = int(response.json()["total"])

    result.enqueue_tasks_per_second = tasks / result.enqueue_seconds if result.enqueue_seconds else 0.0
    result.drain_tasks_per_second = result.completed / result.drain_seconds if result.drain_seconds else 0.0
    result.claim_latency_ms_p50 = percentile(latencies, 50)
    result.claim_latency_ms_p99 = percentile(latencies, 99)


# -- the command -----------------------------------------------------------------------------------------


def _describe(database_url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(database_url).render_as_string(hide_password=True)


def print_table(result: Result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Workloom lifecycle: {result.tasks} tasks, {result.workers} workers, batch {result.batch}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("database", result.database)
    table.add_row("enqueue", f"{result.enqueue_tasks_per_second:,.1f} tasks/s ({result.enqueue_seconds:.2f} s)")
    table.add_row(
        "drain (claim + complete)", f"{result.drain_tasks_per_second:,.1f} tasks/s ({result.drain_seconds:.2f} s)"
    )
    table.add_row("claim latency p50", f"{result.claim_latency_ms_p50:.1f} ms")
    table.add_row("claim latency p99", f"{result.claim_latency_ms_p99:.1f} ms")
    table.add_row("claim requests", str(result.claim_requests))
    table.add_row("completed", f"{result.completed} / {result.tasks}")
    table.add_row("errors", str(len(result.errors)))
    console = Console()
    console.print(table)
    for error in result.errors[:10]:
        console.print(f"[red]{error}[/red]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks to create and drain (default 1000)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--batch", type=int, default=10, help="claim limit per request, 1..100 (default 10)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="sqlite:///path, or a postgresql:// server on which a database is created and dropped "
        "(default: a fresh SQLite file in a temp dir)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.workers < 1 or not 1 <= args.batch <= 100:
        parser.error("--tasks and --workers must be at least 1, --batch between 1 and 100")

    token = "wl_bench_" + secrets.token_urlsafe(16)
    result = Result(tasks=args.tasks, workers=args.workers, batch=args.batch, database="")
    with bench_database(args.database_url) as url, server(url, token) as base:
        result.database = _describe(url)
        asyncio.run(run_workload(base, token, args.tasks, args.workers, args.batch, result))

    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print_table(result)
    return 0 if result.completed == args.tasks and not result.errors else 1


if __name__ == "__main__":
    sys.exit(main())
