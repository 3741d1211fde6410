"""A worker for the runtime tests whose handler holds on to its task.

Every handler call appends the task id to ``$WL_TEST_OUT/<pid>.started`` first; then, by ``WL_TEST_MODE``:

- ``hang``: an async handler that never returns (the process is killed under it);
- ``sleep``: an async handler that works for ``WL_TEST_SLEEP`` seconds, appends the id to ``<pid>.finished``
  and returns;
- ``stuck``: a sync handler that blocks and ignores cancellation (shutdown must release it and still exit).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from workloom.worker import Job, Worker

QUEUE = os.environ["WL_TEST_QUEUE"]
OUT = Path(os.environ["WL_TEST_OUT"])
MODE = os.environ["WL_TEST_MODE"]
SLEEP = float(os.environ.get("WL_TEST_SLEEP", "1"))

app = Worker(name="hold", wait_seconds=float(os.environ.get("WL_TEST_WAIT", "1")))


def note(job: Job, what: str) -> None:
    with (OUT / f"{os.getpid()}.{what}").open("a") as out:
        out.write(job.task_id + "\n")


if MODE == "stuck":

    @app.handler(QUEUE)
    def stuck(job: Job) -> None:
        note(job, "started")
        threading.Event().wait()  # never set: this handler ignores job.cancelled

else:

    @app.handler(QUEUE)
    async def hold(job: Job) -> dict[str, str]:
        note(job, "started")
        if MODE == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(SLEEP)  # the handler's "work"
        note(job, "finished")
        return {"mode": MODE}
