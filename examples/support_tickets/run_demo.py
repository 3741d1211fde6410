"""Run the whole demo against a Workloom server and check the outcome (also the CI smoke test).

    python run_demo.py [--url URL] [--key KEY] [--tickets N] [--output DIR] [--timeout SECONDS]

Seeds the tickets, starts the drafter (agent) and the filer (automation) as ``workloom worker`` processes,
waits until every ticket's reply is drafted and filed, stops the workers with SIGTERM, and exits 0 when
everything checks out (1 otherwise, saying what is missing). URL and key default to WORKLOOM_URL and
WORKLOOM_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from seed import Seeded, seed
from tickets import SAMPLE_TICKETS

from workloom.client import Client

HERE = Path(__file__).resolve().parent
CLOSED = ("completed", "failed", "skipped", "canceled")


def start_worker(script: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{Path(script).stem}.log").open("ab")
    command = [sys.executable, "-m", "workloom.cli.main", "worker", f"{HERE / script}:app", "--wait-seconds", "2"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_filing(wl: Client, seeded: list[Seeded], timeout: float) -> list[str]:
    """Wait until every filing task is closed; the problems found (empty when all were filed)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {item.ticket: wl.get_task(item.filing_task_id).status for item in seeded}
        if all(status in CLOSED for status in statuses.values()):
            break
        if time.monotonic() > deadline:
            waiting = {ticket: status for ticket, status in statuses.items() if status not in CLOSED}
            return [f"not filed after {timeout:g}s: {waiting}"]
        time.sleep(0.25)  # polling the server until the deadline
    return [f"{ticket}: filing task {status}" for ticket, status in statuses.items() if status != "completed"]


def check(wl: Client, seeded: list[Seeded], output: Path, batch: str) -> list[str]:
    problems = []
    path = output / "filed.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    filed = [entry["ticket"] for entry in lines if entry.get("batch") == batch]
    if sorted(filed) != sorted(item.ticket for item in seeded):
        problems.append(f"{path} has {sorted(filed)} for this batch, expected each ticket once")
    for item in seeded:
        draft = wl.get_task(item.draft_task_id)
        runs = wl.list_runs(draft.id)
        if draft.status != "completed" or not runs or not (runs[-1].usage or {}).get("tokens"):
            problems.append(f"{item.ticket}: draft {draft.identifier} is {draft.status} without usage recorded")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("WORKLOOM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("WORKLOOM_API_KEY"))
    parser.add_argument("--tickets", type=int, default=len(SAMPLE_TICKETS))
    parser.add_argument("--output", type=Path, default=Path("support-output"), help="where filed replies go")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all tickets")
    args = parser.parse_args()
    if not args.key:
        print("Set WORKLOOM_API_KEY (or pass --key): 'workloom serve' prints a key at its first start.")
        return 1
    output: Path = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WORKLOOM_URL": args.url, "WORKLOOM_API_KEY": args.key, "SUPPORT_OUTPUT_DIR": str(output)}
    batch = uuid.uuid4().hex[:8]

    with Client(args.url, args.key) as wl:
        seeded = seed(wl, args.tickets, batch)
        print(f"seeded {len(seeded)} tickets (batch {batch}); starting the drafter and the filer")
        workers = [start_worker("drafter.py", env, output), start_worker("filer.py", env, output)]
        try:
            problems = wait_for_filing(wl, seeded, args.timeout)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=60) for worker in workers]
        problems += [f"a worker exited with {code} (see {output}/*.log)" for code in codes if code != 0]
        if not problems:
            problems = check(wl, seeded, output, batch)

    if problems:
        print("demo FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"all {len(seeded)} tickets drafted and filed in {output / 'filed.jsonl'}; workers stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
