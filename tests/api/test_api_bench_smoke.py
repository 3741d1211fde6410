"""The lifecycle benchmark runs end to end and reports its figures (no assertions on timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lifecycle_bench_drives_50_tasks_to_completion_and_reports_json() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.lifecycle", "--tasks", "50", "--workers", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    figures = json.loads(finished.stdout)

    assert figures["tasks"] == 50
    assert figures["workers"] == 2
    assert figures["completed"] == 50
    assert figures["errors"] == []
    assert figures["database"].startswith("sqlite")
    for name in ("enqueue_tasks_per_second", "drain_tasks_per_second", "claim_latency_ms_p50", "claim_latency_ms_p99"):
        assert isinstance(figures[name], float) and figures[name] > 0, (name, figures[name])
    assert figures["claim_latency_ms_p50"] <= figures["claim_latency_ms_p99"]
    assert figures["claim_requests"] >= 50 / 10
