"""A worker for the runtime tests: records every task it handles, then completes it.

Each handled task id is appended to ``$WL_TEST_OUT/<pid>.ids`` (one line per handler call), so a test can
check that every task was handled exactly once across processes. ``WL_TEST_SYNC=1`` uses a sync handler
(run in a thread) instead of an async one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from workloom.worker import Job, Worker

QUEUE = os.environ["WL_TEST_QUEUE"]
OUT = Path(os.environ["WL_TEST_OUT"])
_lock = threading.Lock()

app = Worker(
    name="drain",
    wait_seconds=float(os.environ.get("WL_TEST_WAIT", "2")),
    start_runs=os.environ.get("WL_TEST_START", "1") == "1",
)


def record(job: Job) -> dict[str, int]:
    with _lock, (OUT / f"{os.getpid()}.ids").open("a") as out:
        out.write(job.task_id + "\n")
    return {"pid": os.getpid()}


if os.environ.get("WL_TEST_SYNC") == "1":

    @app.handler(QUEUE)
    def handle_sync(job: Job) -> dict[str, int]:
        return record(job)

else:

    @app.handler(QUEUE)
    async def handle(job: Job) -> dict[str, int]:
        return record(job)
