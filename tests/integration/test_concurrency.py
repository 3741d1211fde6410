"""Several engines (as several server processes would) claiming from one queue at once."""

from __future__ import annotations

import asyncio
from collections import Counter

from harness import Harness

from workloom.domain.actors import Actor
from workloom.domain.clock import ManualClock
from workloom.domain.queries import ListQuery
from workloom.engine.service import Workloom


async def test_concurrent_claimers_never_share_a_run(migrated_url, h):
    for number in range(30):
        await h.create(f"job {number}", queue="q")
    clock = ManualClock(h.clock.now())
    engines = [Workloom.from_url(migrated_url, clock) for _ in range(4)]
    try:
        workers = [Harness(engine, h.principal, clock) for engine in engines]

        async def drain(worker: Harness, name: str) -> list[str]:
            got: list[str] = []
            while claims := await worker.claim("q", limit=3, worker=Actor("agent_session", name)):
                for claim in claims:
                    await worker.complete(claim, name)
                    got.append(claim.task.id)
            return got

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(drain(w, f"worker-{i}") for i, w in enumerate(workers)))
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines))

    claimed = Counter(task_id for got in results for task_id in got)
    assert len(claimed) == 30
    assert set(claimed.values()) == {1}
    page = await h.list(ListQuery(limit=100))
    assert {t.status for t in page.items} == {"completed"}
