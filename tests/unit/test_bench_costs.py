"""What the bench counts a job's costs with (``bench/peers/costs.py``): the same for Workloom, the bare
endpoint and the peers' scripts, so each figure must be exactly what it says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.peers import costs

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, name: str, utime: int, stime: int) -> str:
    # stat(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime …
    return f"{pid} ({name}) S 1 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} 0 0 20 0 1 0 100 1000 50\n"


def _fake_proc(root: Path, processes: dict[int, tuple[str, int, int]]) -> Path:
    for pid, (name, utime, stime) in processes.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(_stat(pid, name, utime, stime))
    (root / "self").mkdir()  # not a pid: skipped
    (root / "meminfo").write_text("MemTotal: 1 kB\n")
    return root


def test_wal_positions_read_as_byte_offsets() -> None:
    assert costs.wal_bytes("0/0") == 0
    assert costs.wal_bytes("0/16B3F80") == 0x16B3F80
    assert costs.wal_bytes("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert costs.wal_bytes("1/3B2ADDF8") - costs.wal_bytes("1/3AED9420") == 4_016_600


def test_postgres_cpu_adds_up_user_and_system_time_of_postgres_processes_only(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        {
            10: ("postgres", 100, 50),  # the postmaster
            11: ("postgres", 7, 3),  # a backend: its title is in cmdline, its name stays
            12: ("python3", 999, 999),
            13: ("pg) postgres", 1000, 1000),  # a name with ") " in it is not a postgres process
        },
    )
    assert costs.postgres_cpu_seconds(str(proc)) == pytest.approx((100 + 50 + 7 + 3) / TICKS)


def test_a_process_gone_between_listing_and_reading_is_skipped(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {20: ("postgres", 4, 4)})
    (proc / "21").mkdir()  # listed, but its stat is gone
    assert costs.postgres_cpu_seconds(str(proc)) == pytest.approx(8 / TICKS)


def test_a_window_gives_each_cost_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([10.0, 10.6])  # PostgreSQL's CPU seconds at open, at close
    clock = iter([2.0, 2.3])  # this process's
    monkeypatch.setattr(costs, "postgres_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(costs.time, "process_time", lambda: next(clock))

    window = costs.Window.open("0/1000")
    per_job = window.close("0/1FA0", 300)  # 4,000 bytes later

    assert per_job == pytest.approx({"cpu_us_postgres": 2000.0, "cpu_us_client": 1000.0, "wal_bytes": 4000 / 300})
