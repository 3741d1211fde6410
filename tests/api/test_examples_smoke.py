"""The examples run end to end against a real server (SQLite, the default database): the CI smoke test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import ServerProcess

from workloom.client import Client

SUPPORT_TICKETS = Path(__file__).resolve().parents[2] / "examples" / "support_tickets"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_support_tickets_demo_drafts_and_files_every_ticket(server: ServerProcess, tmp_path: Path) -> None:
    output = tmp_path / "out"
    demo = subprocess.run(
        [sys.executable, str(SUPPORT_TICKETS / "run_demo.py"), "--url", server.url, "--key", server.token,
         "--tickets", "6", "--output", str(output), "--timeout", "60"],
        cwd=SUPPORT_TICKETS, env={**os.environ, "WORKLOOM_API_KEY": ""}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    logs = "".join(path.read_text() for path in sorted(output.glob("*.log")))
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}\n{logs[-4000:]}"
    assert "all 6 tickets drafted and filed" in demo.stdout

    filed = [json.loads(line) for line in (output / "filed.jsonl").read_text().splitlines()]
    assert sorted(entry["ticket"] for entry in filed) == [f"T-{n}" for n in range(1001, 1007)]
    assert all(entry["reply"].startswith("Hi ") for entry in filed)
    with Client(server.url, server.token) as wl:
        drafts = list(wl.iter_tasks(queue="support"))
        filings = list(wl.iter_tasks(queue="filing"))
        assert [t.status for t in drafts + filings] == ["completed"] * 12
        run = wl.list_runs(drafts[0].id)[-1]
        assert run.claimed_by is not None and run.claimed_by.kind == "agent_session"
        assert run.usage is not None and run.usage["tokens"] > 0 and run.usage["cost"] > 0
