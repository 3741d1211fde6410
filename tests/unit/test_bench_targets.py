"""The latency target compares Workloom's p99 with a peer's only where the peer kept up with the rate
offered: a worker that fell behind reports the length of its queue, not a latency."""

from __future__ import annotations

from bench.suite import Sizes, Suite, evaluate, record_kept_up


def _suite() -> Suite:
    return Suite(runs=3, sizes=Sizes(), peers=True, quick=False)


def _p99_target(suite: Suite) -> dict[str, object]:
    return next(row for row in evaluate(suite) if row["target"].startswith("p99 ≤ procrastinate"))


def test_rounds_the_peer_fell_behind_in_are_noted_and_left_out_of_the_target() -> None:
    suite = _suite()
    for p50, p99 in ((6.6, 159.3), (211.8, 13_116.5), (11_209.2, 33_200.4)):  # a table's three rounds
        record_kept_up(suite, "procrastinate", {"p50_ms": p50, "p99_ms": p99}, rate=200.0)
    for ours in (4.2, 10.7, 40.6):
        suite.record("latency", "workloom_p99_ms", ours, "ms")

    assert suite.figures["latency"]["procrastinate_kept_up_p99_ms"] == [159.3]
    assert len([n for n in suite.notes if "procrastinate fell behind the 200 jobs/s" in n]) == 1  # said once
    row = _p99_target(suite)
    assert row["peer"] == 159.3
    assert row["status"] == "met"


def test_a_peer_that_kept_up_is_compared_round_for_round() -> None:
    suite = _suite()
    for p50, p99 in ((4.3, 11.6), (4.7, 16.3), (13.8, 30.0)):  # a median of ten arrivals is 50 ms at 200/s
        record_kept_up(suite, "procrastinate", {"p50_ms": p50, "p99_ms": p99}, rate=200.0)
    for ours in (17.0, 18.0, 19.0):
        suite.record("latency", "workloom_p99_ms", ours, "ms")

    assert suite.notes == []
    row = _p99_target(suite)
    assert row["peer"] == 16.3
    assert row["status"] == "missed"


def test_with_no_round_kept_up_the_target_is_not_judged() -> None:
    suite = _suite()
    record_kept_up(suite, "procrastinate", {"p50_ms": 900.0, "p99_ms": 4_000.0}, rate=200.0)
    record_kept_up(suite, "procrastinate", None, rate=200.0)  # the peer failed: nothing recorded, nothing said
    suite.record("latency", "workloom_p99_ms", 9.0, "ms")

    assert _p99_target(suite)["status"] == "n/a"
    assert len(suite.notes) == 1
