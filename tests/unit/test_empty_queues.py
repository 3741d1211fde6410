"""What a process notes of queues it has just seen empty, and what voids the note."""

from __future__ import annotations

from workloom.engine.empty_queues import EmptyQueues


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_queue_seen_empty_is_empty_until_a_wake_up_of_it() -> None:
    empty = EmptyQueues()
    empty.seen_empty("q1", empty.now())
    empty.seen_empty("q2", empty.now())
    assert empty.is_empty("q1") and empty.is_empty("q2")

    empty.on_keys(["queue:q1", "events:ws"])

    assert not empty.is_empty("q1")
    assert empty.is_empty("q2")  # another queue's wake-up voids nothing of it


def test_a_wake_up_of_everything_voids_every_note() -> None:
    empty = EmptyQueues()
    began = empty.now()
    empty.seen_empty("q1", began)
    empty.on_keys(["*"])
    assert not empty.is_empty("q1")
    empty.seen_empty("q2", began)  # seen by a transaction that began before the wake-up
    assert not empty.is_empty("q2")


def test_what_a_transaction_saw_is_not_noted_if_the_queue_was_woken_since_it_began() -> None:
    empty = EmptyQueues()
    began = empty.now()
    empty.on_keys(["queue:q1"])  # a create committed while the claim was looking

    empty.seen_empty("q1", began)
    empty.seen_empty("q2", began)

    assert not empty.is_empty("q1")
    assert empty.is_empty("q2")
    empty.seen_empty("q1", empty.now())  # a transaction begun after it may note it
    assert empty.is_empty("q1")


def test_a_note_holds_for_a_bounded_time() -> None:
    clock = Clock()
    empty = EmptyQueues(hold_seconds=1.0, monotonic=clock)
    empty.seen_empty("q1", empty.now())
    clock.now += 0.9
    assert empty.is_empty("q1")
    clock.now += 0.2
    assert not empty.is_empty("q1")


def test_a_queue_never_seen_is_not_empty() -> None:
    assert not EmptyQueues().is_empty("q1")
