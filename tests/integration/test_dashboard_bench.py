"""The dashboard benchmark loads its data and reports its figures (timings are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dashboard_bench_loads_a_workspace_and_reports_json(database_url):
    command = [sys.executable, "-m", "bench.dashboard", "--tasks", "400", "--repeat", "2", "--json"]
    finished = subprocess.run(
        [*command, "--database-url", database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    figures = json.loads(finished.stdout)
    assert figures["tasks"] == 400
    assert figures["active_runs"] >= 200  # the held runs, and the queued ones
    for name in ("observe", "observe_by_queue", "observe_by_owner", "inbox"):
        assert set(figures[name]) == {"median_ms", "min_ms", "p95_ms", "max_ms"}
        assert 0 < figures[name]["min_ms"] <= figures[name]["max_ms"]
