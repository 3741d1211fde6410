"""Wake-ups: every watcher of a key hears it, but claimers one at a time (no herd racing for one task)."""

from __future__ import annotations

from workloom.engine.signals import Signals


def test_a_key_wakes_one_claimer_and_every_watcher() -> None:
    signals = Signals()
    with (
        signals.waiter("queue:q", exclusive=True) as first,
        signals.waiter("queue:q", exclusive=True) as second,
        signals.waiter("queue:q") as stream_a,
        signals.waiter("queue:q") as stream_b,
    ):
        signals.notify(["queue:q"])
        assert (first.woken, second.woken) == (True, False)  # the one waiting longest
        assert stream_a.woken and stream_b.woken
        signals.notify(["queue:q"])  # more work: the next claimer
        assert second.woken


def test_a_claimer_that_takes_all_it_asked_for_passes_the_wake_up_on() -> None:
    signals = Signals()
    with signals.waiter("queue:q", exclusive=True) as first, signals.waiter("queue:q", exclusive=True) as second:
        signals.notify(["queue:q"])
        assert first.woken and not second.woken
        signals.pass_on("queue:q")
        assert second.woken


def test_a_claimer_gone_before_using_its_wake_up_hands_it_on() -> None:
    signals = Signals()
    leaving = signals.waiter("queue:q", exclusive=True).__enter__()
    with signals.waiter("queue:q", exclusive=True) as staying:
        signals.notify(["queue:q"])
        assert leaving.woken and not staying.woken
        leaving.__exit__(None, None, None)
        assert staying.woken  # the wake-up was not lost with the caller that left
    assert signals.waiting == 0


def test_a_claimer_that_used_its_wake_up_leaves_the_others_asleep() -> None:
    signals = Signals()
    used = signals.waiter("queue:q", exclusive=True).__enter__()
    with signals.waiter("queue:q", exclusive=True) as staying:
        signals.notify(["queue:q"])
        used._event.clear()  # what ``wait`` does once it has returned
        used.__exit__(None, None, None)
        assert not staying.woken


def test_star_wakes_everyone() -> None:
    signals = Signals()
    with signals.waiter("queue:a", exclusive=True) as a, signals.waiter("queue:a", exclusive=True) as b:
        signals.notify(["*"])
        assert a.woken and b.woken
