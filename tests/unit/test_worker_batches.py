"""How the worker gathers its calls into batch requests (``worker.app._Batched``) and when its heartbeats fall
due (``_due``), without a server: the batch call is a stand-in that records what it was sent."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from workloom.client import RunOutcome
from workloom.client.errors import StaleClaimError
from workloom.worker.app import _Batched, _due

STALE = {"type": "https://workloom.dev/problems/stale-claim", "title": "Stale claim", "status": 409, "detail": "gone"}


class Recorder:
    """A batch endpoint: each call's items, answered after ``release`` is set, refusing the runs in ``stale``."""

    def __init__(self, stale: set[str] | None = None, fail: BaseException | None = None) -> None:
        self.calls: list[list[str]] = []
        self.stale = stale or set()
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: list[str]) -> list[RunOutcome]:
        self.calls.append(items)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [
            RunOutcome(run_id=i, error=STALE) if i in self.stale else RunOutcome(run_id=i, status="running")
            for i in items
        ]


async def test_calls_made_in_one_turn_of_the_loop_are_one_request_each_answered_for_its_own_item() -> None:
    endpoint = Recorder(stale={"b"})
    batched: _Batched[str] = _Batched(endpoint, 0.0, 100)

    done = await asyncio.gather(*(batched(i) for i in "abc"), return_exceptions=True)

    assert endpoint.calls == [["a", "b", "c"]]
    assert isinstance(done[0], RunOutcome) and done[0].status == "running"
    assert isinstance(done[1], StaleClaimError)
    assert isinstance(done[2], RunOutcome)


async def test_a_full_batch_is_sent_at_once_and_the_rest_after() -> None:
    endpoint = Recorder()
    batched: _Batched[str] = _Batched(endpoint, 60.0, 2)  # a delay no test waits for: the size sends

    await asyncio.gather(batched("a"), batched("b"))

    assert endpoint.calls == [["a", "b"]]


async def test_a_caller_that_gives_up_leaves_the_others_request_alone_and_no_error_unread() -> None:
    endpoint = Recorder(fail=ConnectionError("server gone"))
    endpoint.release.clear()
    batched: _Batched[str] = _Batched(endpoint, 0.0, 100)
    unread: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: unread.append(context))

    waiting = asyncio.create_task(batched("a"))
    staying = asyncio.create_task(batched("b"))
    await asyncio.sleep(0)  # both asked; the request goes out on the next turn
    await asyncio.sleep(0)
    waiting.cancel()
    endpoint.release.set()

    with pytest.raises(ConnectionError):
        await staying
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.gather(*batched.sending)
    gc.collect()
    assert endpoint.calls == [["a", "b"]]
    assert unread == []


def test_heartbeats_of_leases_of_one_length_fall_due_together() -> None:
    interval = 10.0
    # Jobs claimed at different instants, their last beats 0.1 s to 2.4 s apart, beat next at one instant.
    dues = {_due(last, interval) for last in (100.1, 101.0, 102.4)}
    assert dues == {112.5}
    assert all(_due(last, interval) - last >= interval for last in (100.1, 102.4))
    assert _due(102.6, interval) == 115.0  # the next step of the grid: at most a quarter interval late
