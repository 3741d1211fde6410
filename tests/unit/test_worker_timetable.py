"""``Timetable``, the worker's heartbeat schedule: one timer for every job, each called when its time comes."""

from __future__ import annotations

import asyncio
from typing import Any

from workloom.worker.timetable import Timetable


class Calls:
    """The callback: records each key with the loop time it was called at; ``fail`` keys raise."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.keys: list[str] = []
        self.times: list[float] = []
        self.fail = fail or set()
        self.called = asyncio.Event()

    def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.times.append(asyncio.get_running_loop().time())
        self.called.set()
        if key in self.fail:
            raise RuntimeError(f"{key} failed")

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.keys) < count:
                self.called.clear()
                await self.called.wait()


async def test_keys_due_together_are_called_together_in_the_order_they_were_set() -> None:
    loop = asyncio.get_running_loop()
    calls = Calls()
    table: Timetable[str] = Timetable(loop, calls)
    at = loop.time() + 0.05
    for key in "cab":
        table.set(key, at)

    await calls.until(3)

    assert calls.keys == ["c", "a", "b"] and calls.times[0] >= at
    assert calls.times[-1] - calls.times[0] < 0.005  # one after the other, from the one timer
    assert len(table) == 0


async def test_a_key_set_again_moves_and_a_dropped_key_is_not_called() -> None:
    loop = asyncio.get_running_loop()
    calls = Calls()
    table: Timetable[str] = Timetable(loop, calls)
    now = loop.time()
    table.set("late", now + 0.02)
    table.set("moved", now + 60)
    table.set("dropped", now + 0.01)
    table.set("moved", now + 0.03)  # earlier than the timer it was first armed with
    table.drop("dropped")
    table.drop("never set")

    await calls.until(2)

    assert calls.keys == ["late", "moved"]
    assert "dropped" not in table and len(table) == 0


async def test_a_failing_callback_leaves_the_others_called_and_the_table_armed() -> None:
    loop = asyncio.get_running_loop()
    calls = Calls(fail={"a"})
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    table: Timetable[str] = Timetable(loop, calls)
    now = loop.time()
    table.set("a", now + 0.01)
    table.set("b", now + 0.01)
    table.set("c", now + 0.03)

    await calls.until(3)

    assert calls.keys == ["a", "b", "c"]
    assert [str(c["exception"]) for c in reported] == ["a failed"]


async def test_close_stops_the_timer() -> None:
    loop = asyncio.get_running_loop()
    calls = Calls()
    table: Timetable[str] = Timetable(loop, calls)
    table.set("a", loop.time() + 0.01)
    table.close()
    table.set("b", loop.time() + 0.02)  # a table can be used again after close

    await calls.until(1)

    assert calls.keys == ["b"]
