"""How far a read of the event log may be handed out to streams (``engine.events._Horizon``), on reads made
up by hand: which numbers a read saw, and which transactions it found in flight where a number is missing."""

from __future__ import annotations

from datetime import UTC, datetime

from workloom.domain.actors import Actor
from workloom.domain.models import Event
from workloom.engine.events import _Horizon

WHO = Actor("automation", "test")


def read(*numbers: int) -> list[Event]:
    at = datetime(2026, 12, 7, tzinfo=UTC)
    return [Event(n, "ws", None, None, None, "task.completed", WHO, None, {}, at) for n in numbers]


def test_a_read_with_no_number_missing_goes_out_whole() -> None:
    assert _Horizon().deliverable(read(1, 2, 3), None) == (3, False)


def test_a_missing_number_is_waited_for_while_its_transactions_are_in_flight() -> None:
    horizon = _Horizon()
    assert horizon.deliverable(read(1, 3), frozenset({70})) == (0, True)
    assert horizon.deliverable(read(1, 3, 4), frozenset({70, 71})) == (0, True)  # 70 still in flight
    assert horizon.deliverable(read(1, 2, 3, 4), frozenset({71})) == (3, True)  # up to the first read's last


def test_a_missing_number_with_nothing_in_flight_is_read_again_before_it_is_passed() -> None:
    """The writer of 2 took its number before its transaction id: the first read's snapshot shows nothing in
    flight. Handed out at once, 3 would take the stream past 2, which commits just after."""
    horizon = _Horizon()
    assert horizon.deliverable(read(1, 3), frozenset()) == (0, True)
    assert horizon.deliverable(read(1, 2, 3), None) == (3, False)


def test_a_number_that_never_comes_holds_a_stream_back_for_one_read_only() -> None:
    horizon = _Horizon()  # 2 was taken by a transaction that rolled back
    assert horizon.deliverable(read(1, 3), frozenset()) == (0, True)
    assert horizon.deliverable(read(1, 3, 4), frozenset()) == (2, True)  # up to 3; then 4 after one more read
