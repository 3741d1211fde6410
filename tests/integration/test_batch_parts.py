"""A large batch of creates is written in parts, each while the next is built (PostgreSQL): the batch is
still one transaction, whole and in order, and a part that fails undoes all of it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from harness import WORKER, Harness, until

from workloom.domain.errors import WorkloomError
from workloom.domain.queries import ListQuery
from workloom.engine import tasks, unit
from workloom.engine.tasks import NewTask
from workloom.engine.unit import IdempotencyKey
from workloom.store.fast import Write


@pytest.fixture
def parts_of_three(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Parts of three tasks; the sizes of the parts sent ahead of the unit's end are counted."""
    monkeypatch.setattr(tasks, "PIPELINED_PART", 3)
    sent: list[int] = []
    flush_soon = unit.Unit.flush_soon

    async def counted(self: unit.Unit) -> None:
        sent.append(len(self.unnumbered))
        await flush_soon(self)

    monkeypatch.setattr(unit.Unit, "flush_soon", counted)
    return sent


def batch(count: int) -> list[NewTask]:
    return [NewTask(title=f"t{i}", queue="q") for i in range(count)]


async def test_a_batch_written_in_parts_is_whole_and_in_order(h: Harness, parts_of_three: list[int]) -> None:
    made = await h.do(lambda u: tasks.create_many(u, batch(10)))

    # PostgreSQL writes three parts ahead and the last at the end; SQLite (its numbering uses the connection
    # a part would still be using) writes the batch at the end.
    assert parts_of_three == ([3, 3, 3] if h.wl.db.is_postgres else [])
    assert [t.number for t in made] == list(range(1, 11))
    for task in made:
        assert (await h.task(task.id)).status == "ready"
        assert await h.event_types(task.id) == ["task.created", "task.ready", "run.queued"]
    claimed = await h.claim("q", limit=20)
    assert sorted(c.task.number for c in claimed) == list(range(1, 11))


async def test_a_part_that_fails_to_be_written_undoes_the_whole_batch(
    h: Harness, parts_of_three: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_all = unit.write_all

    async def failing(conn: Any, writes: Sequence[Write], *, final: bool = False) -> None:
        if any(row.get("title") == "t4" for write in writes for row in write.rows):
            raise WorkloomError("the write of the part holding t4 failed")
        await write_all(conn, writes, final=final)

    monkeypatch.setattr(unit, "write_all", failing)

    with pytest.raises(WorkloomError, match="t4"):
        await h.do(lambda u: tasks.create_many(u, batch(10)))

    monkeypatch.setattr(unit, "write_all", write_all)
    assert (await h.list(ListQuery(limit=100))).items == []  # the part written before the failure is undone too
    after = await h.create("after the failure", queue="q")  # the connection is sound
    assert after.status == "ready"


async def test_a_keyed_claimer_handed_runs_of_several_parts_keeps_them_all_under_its_key(
    h: Harness, parts_of_three: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.wl, "claim_poll_seconds", 60)  # once seen waiting, it waits until handed work
    flush_soon = unit.Unit.flush_soon

    async def written_before_the_next_part(self: unit.Unit) -> None:
        await flush_soon(self)
        await self.sent()  # each part wholly written (and whatever it took answered) before the next is built

    monkeypatch.setattr(unit.Unit, "flush_soon", written_before_the_next_part)
    await h.queue("q")
    key = IdempotencyKey("batch-claim", b"POST /v1/queues/q/claim")

    async def claim(wait_seconds: float) -> list[Any]:
        _, found = await h.wl.claim(
            h.principal, "q", WORKER, limit=20, lease_seconds=None, wait_seconds=wait_seconds,
            render=lambda claims: (200, list(claims)), idempotency=key,
        )  # fmt: skip
        return list(found)

    claimer = asyncio.create_task(claim(10))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)

    made = await h.do(lambda u: tasks.create_many(u, batch(25)))

    assert [t.status for t in made] == ["in_progress"] * 20 + ["ready"] * 5
    handed = await claimer
    assert [c.task.id for c in handed] == [t.id for t in made[:20]]
    # Its answer, kept under its key, holds every run of every part: a retry gets all twenty back.
    replayed = await claim(0)
    assert [c["run"]["id"] for c in replayed] == [c.run.id for c in handed]
