"""A completion whose ``claim_next`` waits (``ThenWait``): a worker's whole loop, complete and take the next,
in one call — committed first, then a long-poll of the queue for the same worker when nothing was next."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import Harness, until

from workloom.domain.models import Claim, Run
from workloom.engine import runs
from workloom.engine.service import ThenWait
from workloom.engine.unit import IdempotencyKey, Rendered

Answer = dict[str, Any]


def _render(done: tuple[Run, list[Claim]]) -> Rendered:
    run, claims = done
    return 200, {"run": run.id, "status": run.status, "claims": [c.run.id for c in claims]}


async def complete_then_wait(
    h: Harness,
    claim: Claim,
    *,
    wait_seconds: float = 10,
    key: IdempotencyKey | None = None,
    give_up: Any = None,
) -> Answer:
    """As the native route does it: the completion, and its wait under the key's continuation."""
    completion = runs.Completion(claim.run.id, claim.claim_token, claim_next=1)
    then = ThenWait(
        seconds=wait_seconds,
        limit=1,
        lease_seconds=None,
        at=None,
        run_id=claim.run.id,
        claimed=lambda rendered: bool(rendered[1]["claims"]),
        adding=lambda rendered, claims: (rendered[0], {**rendered[1], "claims": [c.run.id for c in claims]}),
        give_up=give_up,
    )
    status, answer = await h.wl.respond_claiming(h.principal, completion, _render, key, shared=True, then=then)
    assert status == 200
    return dict(answer)


async def _first(h: Harness) -> Claim:
    await h.queue("loop", lease_seconds=300)
    await h.create("first", queue="loop")
    return await h.claim_one("loop")


async def test_the_completion_is_committed_before_the_wait_and_the_next_task_is_handed_to_it(h: Harness) -> None:
    claim = await _first(h)
    waiting = asyncio.create_task(complete_then_wait(h, claim))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)

    assert (await h.task(claim.task.id)).status == "completed"  # done while the worker waits for the next
    created = await h.create("second", queue="loop")
    answer = await waiting

    (next_run,) = await h.runs(created.id)
    assert answer == {"run": claim.run.id, "status": "completed", "claims": [next_run.id]}
    assert next_run.status == "claimed" and next_run.claimed_by == claim.run.claimed_by


async def test_a_wait_that_finds_nothing_ends_with_the_completion_and_no_claims(h: Harness) -> None:
    claim = await _first(h)
    async with asyncio.timeout(10):
        answer = await complete_then_wait(h, claim, wait_seconds=0.2)
    assert answer == {"run": claim.run.id, "status": "completed", "claims": []}


async def test_what_is_claimable_at_once_is_claimed_in_the_completion_without_waiting(h: Harness) -> None:
    claim = await _first(h)
    created = await h.create("already there", queue="loop")
    async with asyncio.timeout(5):
        answer = await complete_then_wait(h, claim, wait_seconds=30)
    assert answer["claims"] == [run.id for run in await h.runs(created.id)]


async def test_a_caller_gone_during_the_wait_is_claimed_nothing_and_its_completion_stands(h: Harness) -> None:
    claim = await _first(h)
    gone = asyncio.Event()

    async def give_up() -> bool:
        return gone.is_set()

    waiting = asyncio.create_task(complete_then_wait(h, claim, give_up=give_up))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)
    gone.set()
    await h.create("arrives after the caller left", queue="loop")
    answer = await waiting

    assert answer["claims"] == []
    assert (await h.task(claim.task.id)).status == "completed"
    assert [c.task.title for c in await h.claim("loop")] == ["arrives after the caller left"]


# -- under an idempotency key ----------------------------------------------------------------------------


def _key(name: str) -> IdempotencyKey:
    return IdempotencyKey(name, b"POST /v1/runs/complete")


async def test_a_repeat_gives_back_what_the_wait_was_handed(h: Harness) -> None:
    claim = await _first(h)
    key = _key("loop-1")
    waiting = asyncio.create_task(complete_then_wait(h, claim, key=key))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)
    await h.create("second", queue="loop")
    first = await waiting
    await h.create("third", queue="loop")

    async with asyncio.timeout(5):
        repeated = await complete_then_wait(h, claim, key=key)

    assert repeated == first  # the same run, not the third task
    assert len(first["claims"]) == 1
    assert (await h.run(first["claims"][0])).idempotency_key == "loop-1"  # the client's key, as any claim's
    assert [c.task.title for c in await h.claim("loop")] == ["third"]


async def test_a_repeat_of_a_completion_that_claimed_at_once_gives_back_its_claims_without_waiting(
    h: Harness,
) -> None:
    claim = await _first(h)
    await h.create("second", queue="loop")
    key = _key("loop-2")
    first = await complete_then_wait(h, claim, key=key)
    assert len(first["claims"]) == 1
    await h.create("third", queue="loop")

    async with asyncio.timeout(5):
        repeated = await complete_then_wait(h, claim, key=key)

    assert repeated == first
    assert [c.task.title for c in await h.claim("loop")] == ["third"]  # the repeat claimed nothing more


async def test_a_repeat_during_the_wait_waits_again_and_one_task_goes_to_one_of_them(h: Harness) -> None:
    claim = await _first(h)
    key = _key("loop-3")
    gone = asyncio.Event()

    async def give_up() -> bool:
        return gone.is_set()

    # The first caller's connection drops mid-wait: nothing is stored under the wait's key; its repeat
    # gives back the completion and waits again, and gets the next task.
    first = asyncio.create_task(complete_then_wait(h, claim, key=key, give_up=give_up))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)
    gone.set()
    repeat = asyncio.create_task(complete_then_wait(h, claim, key=key))
    await until(lambda: h.wl.runner.handoffs.waiting == 1 and first.done())
    assert (await first)["claims"] == []
    created = await h.create("second", queue="loop")

    answer = await repeat
    assert answer["claims"] == [run.id for run in await h.runs(created.id)]


async def test_the_wait_of_a_call_done_here_reads_no_stored_answer_first(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = await _first(h)
    reads: list[str] = []
    answered = h.wl.runner.answered

    async def counted(workspace_id: str, idempotency: IdempotencyKey) -> bool:
        reads.append(idempotency.key)
        return await answered(workspace_id, idempotency)

    monkeypatch.setattr(h.wl.runner, "answered", counted)
    waiting = asyncio.create_task(complete_then_wait(h, claim, key=_key("loop-4")))
    await until(lambda: h.wl.runner.handoffs.waiting == 1)
    assert reads == []  # its key's answer was stored by this very call: nothing could be under the wait's yet
    await h.create("second", queue="loop")
    assert len((await waiting)["claims"]) == 1
