"""procrastinate 3.10 peer, run with the peers virtualenv's python; prints one JSON object.

python procrastinate_peer.py URL setup
python procrastinate_peer.py URL drain N          # N jobs batch-deferred (untimed), then a worker drains them
python procrastinate_peer.py URL batch N          # batch_defer_async in batches of 1000
python procrastinate_peer.py URL latency N RATE WARM  # WARM unmeasured, then N deferred one by one at RATE/s
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import sys
import time

import procrastinate
from costs import WAL_POSITION, Window  # beside this script: the peers' python runs it from there

CONCURRENCY = 10
QUEUE = "bench"


def make_app(url: str) -> tuple[procrastinate.App, list[float]]:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    latencies: list[float] = []

    @app.task(name="noop", queue=QUEUE)
    async def noop(sent: float = 0.0) -> None:
        if sent:
            latencies.append((time.time() - sent) * 1000)

    return app, latencies


async def setup(url: str) -> dict[str, object]:
    app, _ = make_app(url)
    async with app.open_async():
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            row = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
        if not row[0]:
            await app.schema_manager.apply_schema_async()
    return {"installed": True}


async def clear(app: procrastinate.App) -> None:
    async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
        await conn.execute("DELETE FROM procrastinate_events; DELETE FROM procrastinate_jobs")


async def wal_position(app: procrastinate.App) -> str:
    async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
        row = await (await conn.execute(WAL_POSITION)).fetchone()
    return str(row[0])


async def batch_defer(app: procrastinate.App, n: int, chunk: int = 1000) -> None:
    task = app.tasks["noop"]
    for start in range(0, n, chunk):
        await task.batch_defer_async(*({} for _ in range(min(chunk, n - start))))


async def drain(url: str, n: int) -> dict[str, object]:
    app, _ = make_app(url)
    async with app.open_async():
        await clear(app)
        await batch_defer(app, n)
        window = Window.open(await wal_position(app))
        started = time.perf_counter()
        await app.run_worker_async(queues=[QUEUE], concurrency=CONCURRENCY, wait=False, install_signal_handlers=False)
        seconds = time.perf_counter() - started
        ended_at = await wal_position(app)
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            row = await (
                await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status='succeeded'")
            ).fetchone()
        done = int(row[0])
        costs = window.close(ended_at, done)
        await clear(app)
    return {"jobs": done, "seconds": seconds, "per_second": done / seconds, **costs}


async def batch(url: str, n: int) -> dict[str, object]:
    app, _ = make_app(url)
    async with app.open_async():
        window = Window.open(await wal_position(app))
        started = time.perf_counter()
        await batch_defer(app, n)
        seconds = time.perf_counter() - started
        costs = window.close(await wal_position(app), n)
        await clear(app)
    return {"jobs": n, "seconds": seconds, "per_second": n / seconds, **costs}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] if ordered else 0.0


async def latency(url: str, n: int, rate: float, warm: int = 0) -> dict[str, object]:
    app, latencies = make_app(url)
    async with app.open_async():
        await clear(app)
        worker = asyncio.create_task(
            app.run_worker_async(queues=[QUEUE], concurrency=CONCURRENCY, install_signal_handlers=False)
        )
        await asyncio.sleep(1.0)
        task = app.tasks["noop"]
        began = time.perf_counter()
        gc.collect()
        gc.disable()  # as the bench's own load generator does while it times latencies
        try:
            for i in range(warm + n):
                await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
                await task.defer_async(sent=time.time() if i >= warm else 0.0)  # 0: not measured
            deadline = time.monotonic() + 30
            while len(latencies) < n and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            gc.enable()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(worker, 10)
        await clear(app)
    return {
        "jobs": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "max_ms": max(latencies, default=0.0),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    url, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 200.0
    warm = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    runner = {
        "setup": lambda: setup(url),
        "drain": lambda: drain(url, n),
        "batch": lambda: batch(url, n),
        "latency": lambda: latency(url, n, rate, warm),
    }[mode]
    print(json.dumps(asyncio.run(runner())))


if __name__ == "__main__":
    main()
