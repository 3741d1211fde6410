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


async def test_a_claimer_that_used_its_wake_up_leaves_the_others_asleep() -> None:
    signals = Signals()
    used = signals.waiter("queue:q", exclusive=True).__enter__()
    with signals.waiter("queue:q", exclusive=True) as staying:
        signals.notify(["queue:q"])
        assert await used.wait(10) and used.signalled
        used.__exit__(None, None, None)
        assert not staying.woken


async def test_a_claimer_answered_without_a_wake_up_owes_the_others_none() -> None:
    signals = Signals()
    answered = signals.waiter("queue:q", exclusive=True).__enter__()
    with signals.waiter("queue:q", exclusive=True) as staying:
        answered.answer()  # handed its work (``Handoffs``)
        assert await answered.wait(10) and not answered.signalled
        answered.__exit__(None, None, None)
        assert not staying.woken


async def test_a_claimer_answered_and_woken_at_once_knows_it_took_a_wake_up() -> None:
    signals = Signals()
    with signals.waiter("queue:q", exclusive=True) as both:
        signals.notify(["queue:q"])
        both.answer()
        assert await both.wait(10) and both.signalled  # so it passes the wake-up on to the next claimer


async def test_a_wake_up_that_comes_after_the_wait_is_handed_on_at_exit() -> None:
    signals = Signals()
    leaving = signals.waiter("queue:q", exclusive=True).__enter__()
    with signals.waiter("queue:q", exclusive=True) as staying:
        leaving.answer()
        assert await leaving.wait(10)
        signals.notify(["queue:q"])  # while it renders its answer: it will not come back to look
        assert not staying.woken
        leaving.__exit__(None, None, None)
        assert staying.woken


def test_star_wakes_everyone() -> None:
    signals = Signals()
    with signals.waiter("queue:a", exclusive=True) as a, signals.waiter("queue:a", exclusive=True) as b:
        signals.notify(["*"])
        assert a.woken and b.woken
