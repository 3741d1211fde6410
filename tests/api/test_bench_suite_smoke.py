"""``python -m bench --quick`` runs the drain, single and enqueue scenarios end to end on a fresh
PostgreSQL database and writes their figures as JSON (peers off; nothing asserted about speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_quick_bench_reports_figures_for_drain_single_and_enqueue(database_url: str, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-peers",
            "--scenarios",
            "drain,single,enqueue",
            "--database-url",
            database_url,
            "--json",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    data = json.loads(report.read_text())

    assert data["quick"] is True
    assert data["runs"] == 1
    assert "commit" in data  # which code the figures are of (None outside a git checkout)
    for scenario, metric in (
        ("drain", "workloom"),
        ("drain", "workloom_worker"),
        ("single", "workloom"),
        ("enqueue", "workloom_one"),
    ):
        figure = data["figures"][scenario][metric]
        assert len(figure["values"]) == 1
        assert figure["min"] == figure["median"] == figure["max"] > 0, (scenario, figure)
    # What each task cost the database, beside its rate: its CPU and the WAL it wrote (a task is at least a
    # row inserted and updated, so some WAL, and far less than a megabyte of it).
    for scenario, prefix in (("drain", ""), ("single", ""), ("enqueue", "one_"), ("enqueue", "batch_")):
        figure = data["figures"][scenario][f"{prefix}wal_bytes"]
        wal = figure["median"]
        assert figure["unit"] == "B/task"
        assert 100 < wal < 1_000_000, (scenario, prefix, wal)
        assert data["figures"][scenario][f"{prefix}cpu_us_postgres"]["median"] > 0, (scenario, prefix)
    assert {row["scenario"] for row in data["targets"]} >= {"drain", "single", "enqueue"}
    assert "Workloom bench" in finished.stdout
