"""Which task numbers a process takes (``NumberStock``): exactly what is asked for at a light load, a few
reserved ahead under load, never a number reserved long before its task was made, a batch's numbers one run.
Against a stand-in counter and a hand-moved clock, so every case is exact."""

from __future__ import annotations

import asyncio
import logging

import pytest

from workloom.store.numbers import AHEAD_FROM, HOLD_SECONDS, WINDOW_SECONDS, NumberStock

BATCH = 17  # one call's tasks, more than the numbers held ahead


class Counter:
    """The workspace's counter: ``fetch`` moves it on by ``count`` and returns where it is, as the
    reservation's UPDATE does; ``asked`` records each reservation's size. With ``gate`` cleared a reservation
    waits until it is set (one on its way); ``failing`` makes the next reservations fail."""

    def __init__(self) -> None:
        self.value = 0
        self.asked: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def fetch(self, workspace_id: str, count: int) -> int:
        assert workspace_id == "ws"
        self.asked.append(count)
        await self.gate.wait()
        if self.failing:
            raise ConnectionError("the database went away")
        self.value += count
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stock(counter: Counter, clock: Clock) -> NumberStock:
    return NumberStock(counter.fetch, clock)


async def settled() -> None:
    """Let reservations started in the background (top-ups) run to their end."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_a_light_load_each_create_reserves_exactly_its_numbers(
    stock: NumberStock, counter: Counter, clock: Clock
) -> None:
    taken = []
    for _ in range(6):
        taken += await stock.take("ws", 1, whole=False)
        clock.now += WINDOW_SECONDS  # one create a window: below what reserves ahead
        await settled()

    assert taken == [1, 2, 3, 4, 5, 6]
    assert counter.asked == [1] * 6
    assert counter.value == 6  # nothing reserved that no task holds


async def test_under_load_numbers_are_reserved_ahead_and_taken_in_order_without_gaps(
    stock: NumberStock, counter: Counter, clock: Clock
) -> None:
    taken = []
    for _ in range(200):  # creates one after another, faster than a window each
        taken += await stock.take("ws", 1, whole=False)
        clock.now += WINDOW_SECONDS / 50
        await settled()

    assert taken == list(range(1, 201))
    # A reservation for the first few; after that, the numbers ahead are topped up before they run out.
    assert len(counter.asked) < 200 / 10, counter.asked
    assert max(counter.asked) <= 2 * 50 + 1  # a window's creates ahead, not more
    assert counter.value - 200 <= 2 * 50  # what is held ahead is a few, not a stockpile


async def test_numbers_not_taken_in_time_are_left_unused(stock: NumberStock, counter: Counter, clock: Clock) -> None:
    first = [n for _ in range(AHEAD_FROM) for n in await stock.take("ws", 1, whole=False)]
    await settled()
    reserved = counter.value
    assert reserved > AHEAD_FROM  # some held ahead

    clock.now += HOLD_SECONDS + 0.001
    later = await stock.take("ws", 1, whole=False)

    assert first == list(range(1, AHEAD_FROM + 1))
    assert later == [reserved + 1]  # not one reserved before the pause: those are a gap
    assert counter.asked[-1] == 1  # and the pause ended the load: reserved exactly


async def test_a_batch_is_reserved_whole_as_one_run_leaving_the_numbers_ahead_to_the_creates(
    stock: NumberStock, counter: Counter
) -> None:
    singles = [n for _ in range(AHEAD_FROM) for n in await stock.take("ws", 1, whole=False)]
    await settled()
    ahead = counter.value

    batch = await stock.take("ws", BATCH)
    after = await stock.take("ws", 1, whole=False)

    assert list(batch) == list(range(ahead + 1, ahead + BATCH + 1))
    assert counter.asked[-1] == BATCH
    assert after == [singles[-1] + 1]  # the next create takes the next number held ahead


async def test_a_small_batch_is_one_run_too_and_several_creates_may_span_reservations(
    stock: NumberStock, counter: Counter
) -> None:
    for _ in range(AHEAD_FROM):
        await stock.take("ws", 1, whole=False)
    await settled()
    held_from = AHEAD_FROM + 1  # the numbers ahead start here
    counter.value += 100  # another process reserves meanwhile

    batch = await stock.take("ws", 3)  # one call's tasks (whole, the default)
    assert list(batch) == [counter.value - 2, counter.value - 1, counter.value]  # reserved as it came, one run

    group = await stock.take("ws", 3, whole=False)  # three creates' numbers, from those ahead
    assert list(group) == [held_from, held_from + 1, held_from + 2]


async def test_creates_that_find_a_reservation_on_its_way_wait_for_it_and_share_the_next(
    stock: NumberStock, counter: Counter
) -> None:
    counter.gate.clear()
    first = asyncio.ensure_future(stock.take("ws", 1, whole=False))
    await settled()
    others = [asyncio.ensure_future(stock.take("ws", 2, whole=False)) for _ in range(5)]
    await settled()
    assert counter.asked == [1]  # the others wait for the one on its way

    counter.gate.set()
    got = [await first, *[await t for t in others]]

    assert counter.asked[0] == 1 and len(counter.asked) == 2  # then one reservation for all five
    assert counter.asked[1] >= 10
    numbers_taken = [n for taken in got for n in taken]
    assert numbers_taken == list(range(1, 12))  # in the order they asked, none twice


async def test_a_failed_reservation_fails_the_creates_waiting_on_it_and_the_next_one_tries_again(
    stock: NumberStock, counter: Counter
) -> None:
    counter.failing = True
    waiting = [asyncio.ensure_future(stock.take("ws", 1, whole=False)) for _ in range(3)]
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes), outcomes

    counter.failing = False
    assert await stock.take("ws", 1, whole=False) == [1]


async def test_a_reservation_ahead_that_fails_with_nobody_waiting_is_logged_not_raised(
    stock: NumberStock, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "workloom.store")
    for _ in range(AHEAD_FROM):
        await stock.take("ws", 1, whole=False)
    await settled()
    held = counter.value - AHEAD_FROM
    counter.failing = True
    for _ in range(held):  # take what is held ahead: its top-up, in the background, fails
        await stock.take("ws", 1, whole=False)
    await settled()

    assert "task numbers could not be reserved ahead" in caplog.text
    counter.failing = False
    before = counter.value  # the failed top-up reserved nothing
    assert await stock.take("ws", 1, whole=False) == [before + 1]
