"""pgqueuer 1.6 peer, run with the peers virtualenv's python; prints one JSON object.

python pgqueuer_peer.py URL setup
python pgqueuer_peer.py URL drain N        # N jobs enqueued (batch, untimed), then one worker drains them
python pgqueuer_peer.py URL enqueue N      # N one-at-a-time enqueues from 16 concurrent connections
python pgqueuer_peer.py URL batch N        # N jobs in batches of 1000
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg
from costs import WAL_POSITION, Window  # beside this script: the peers' python runs it from there
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, PgQueuer, Queries
from pgqueuer.types import QueueExecutionMode

CLIENTS = 16
ENTRYPOINT = "noop"


async def setup(url: str) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL")
        if not exists:
            await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return {"installed": True}


async def batch_enqueue(queries: Queries, n: int, chunk: int = 1000) -> None:
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)


async def drain(url: str, n: int) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        driver = AsyncpgDriver(conn)
        await conn.execute("DELETE FROM pgqueuer")
        await batch_enqueue(Queries(driver), n)
        pgq = PgQueuer(driver)
        done = 0

        @pgq.entrypoint(ENTRYPOINT)
        async def noop(job: object) -> None:
            nonlocal done
            done += 1

        window = Window.open(await conn.fetchval(WAL_POSITION))
        started = time.perf_counter()
        await pgq.run(mode=QueueExecutionMode.drain, batch_size=10)
        seconds = time.perf_counter() - started
        costs = window.close(await conn.fetchval(WAL_POSITION), done)
    finally:
        await conn.close()
    return {"jobs": done, "seconds": seconds, "per_second": done / seconds, **costs}


async def enqueue(url: str, n: int) -> dict[str, object]:
    pool = await asyncpg.create_pool(url, min_size=CLIENTS, max_size=CLIENTS)
    try:
        queries = Queries(AsyncpgPoolDriver(pool))
        numbers = iter(range(n))

        async def client() -> None:
            for _ in numbers:
                await queries.enqueue(ENTRYPOINT, None)

        window = Window.open(await pool.fetchval(WAL_POSITION))
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        seconds = time.perf_counter() - started
        costs = window.close(await pool.fetchval(WAL_POSITION), n)
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM pgqueuer")
    finally:
        await pool.close()
    return {"jobs": n, "seconds": seconds, "per_second": n / seconds, **costs}


async def batch(url: str, n: int) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        window = Window.open(await conn.fetchval(WAL_POSITION))
        started = time.perf_counter()
        await batch_enqueue(Queries(AsyncpgDriver(conn)), n)
        seconds = time.perf_counter() - started
        costs = window.close(await conn.fetchval(WAL_POSITION), n)
        await conn.execute("DELETE FROM pgqueuer")
    finally:
        await conn.close()
    return {"jobs": n, "seconds": seconds, "per_second": n / seconds, **costs}


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    runner = {
        "setup": lambda: setup(url),
        "drain": lambda: drain(url, n),
        "enqueue": lambda: enqueue(url, n),
        "batch": lambda: batch(url, n),
    }[mode]
    print(json.dumps(asyncio.run(runner())))


if __name__ == "__main__":
    main()
