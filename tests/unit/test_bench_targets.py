"""How the suite judges and sets side by side what it measured: the latency target compares Workloom's p99
with a peer's only where the peer kept up with the rate offered (a worker that fell behind reports the
length of its queue, not a latency), and each comparison's costs are given for both sides."""

from __future__ import annotations

import json
from pathlib import Path

from bench.suite import Sizes, Suite, costs_against_peers, evaluate, record_kept_up, rerender


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


def test_each_comparison_gives_both_sides_costs_where_both_were_measured() -> None:
    suite = _suite()
    for value in (7_000.0, 7_100.0, 7_050.0):
        suite.record("drain", "wal_bytes", value, "B/task")
    for value in (1_500.0, 1_510.0, 1_520.0):
        suite.record("drain", "pgqueuer_wal_bytes", value, "B/job")
    suite.record("drain", "cpu_us_postgres", 250.0, "µs/task")
    suite.record("drain", "pgqueuer_cpu_us_postgres", 160.0, "µs/job")
    suite.record("enqueue", "batch_wal_bytes", 4_000.0, "B/task")  # its peer (procrastinate) did not run

    costs = costs_against_peers(suite)

    assert costs == [
        {
            "scenario": "drain",
            "peer": "pgqueuer",
            "wal_bytes": {"workloom": 7_050.0, "peer": 1_510.0, "times": 4.67},
            "cpu_us_postgres": {"workloom": 250.0, "peer": 160.0, "times": 1.56},
        }
    ]


def _target(suite: Suite, text: str) -> dict[str, object]:
    return next(row for row in evaluate(suite) if row["target"] == text)


def test_each_round_is_judged_against_the_peer_of_the_same_round() -> None:
    suite = _suite()
    for ours, bare in ((807.6, 1_346.0), (850.0, 1_090.0), (900.0, 918.4)):  # the machine slows, round by round
        suite.record("single", "workloom", ours, "tasks/s")
        suite.record("single", "bare_fastapi_asyncpg", bare, "tasks/s")

    row = _target(suite, "≥ 0.8 × bare FastAPI+asyncpg")

    assert row["ratio"] == round(850.0 / 1_090.0, 3)  # the medians' ratio sets the status
    assert row["status"] == "missed"
    assert row["rounds"] == [0.6, 0.78, 0.98]
    assert row["rounds_met"] == 1


def test_an_absolute_bound_is_judged_round_by_round_too() -> None:
    suite = _suite()
    for p50 in (15.3, 2.7, 6.6):
        suite.record("latency", "workloom_p50_ms", p50, "ms")

    row = _target(suite, "p50 ≤ 5 ms")

    assert row["rounds"] == [15.3, 2.7, 6.6]
    assert row["rounds_met"] == 1
    assert row["status"] == "missed"


def test_rounds_that_cannot_be_paired_are_not_judged_one_by_one() -> None:
    suite = _suite()
    for ours in (3_400.0, 3_500.0, 3_600.0):
        suite.record("drain", "workloom", ours, "tasks/s")
    for peer in (4_700.0, 4_800.0):  # the peer failed in one round: which round is not known
        suite.record("drain", "pgqueuer", peer, "jobs/s")

    row = _target(suite, "≥ 1.5 × pgqueuer")

    assert row["rounds"] == []
    assert row["rounds_met"] == 0
    assert row["status"] == "missed"  # the medians still are compared


def test_an_earlier_report_is_judged_and_drawn_again_without_measuring(tmp_path: Path) -> None:
    figures = {
        "single": {
            "workloom": {"values": [807.6, 850.0, 900.0], "unit": "tasks/s"},
            "bare_fastapi_asyncpg": {"values": [1_346.0, 1_090.0, 918.4], "unit": "tasks/s"},
        }
    }
    earlier = {
        "commit": "e24b6f5",
        "runs": 3,
        "quick": False,
        "sizes": {"single": 3000, "backlog": [10_000, 100_000], "a size since removed": 1},
        "figures": figures,
        "targets": [],  # judged by an earlier rule
        "costs": [],
        "notes": ["a note of the run"],
    }
    out = tmp_path / "again.json"

    assert rerender(earlier, out, None, tmp_path / "again.txt") == 0  # (the chart needs matplotlib: bench extras)

    again = json.loads(out.read_text())
    assert again["commit"] == "e24b6f5" and again["figures"] == figures and again["notes"] == ["a note of the run"]
    single = next(row for row in again["targets"] if row["scenario"] == "single")
    assert single["rounds"] == [0.6, 0.78, 0.98] and single["status"] == "missed"
    assert "1 of 3" in (tmp_path / "again.txt").read_text()
