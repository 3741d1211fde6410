"""The automation: files each drafted reply by appending it to ``filed.jsonl`` in the output directory.

    SUPPORT_OUTPUT_DIR=./support-output workloom worker filer.py:app

A filing task becomes ready once the ticket's draft task is completed (it depends on it); the handler reads
the draft's output and appends one JSON line. It is a plain (sync) function: the worker runs it in a thread.
Filing is idempotent: a retried filing task finds its line already there and does not add a second one.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tickets import FILING_QUEUE

from workloom.worker import Job, NonRetryableError, Worker

OUTPUT_DIR = Path(os.environ.get("SUPPORT_OUTPUT_DIR", "support-output"))
_lock = threading.Lock()

app = Worker(name="support-filer", kind="automation", concurrency=2)


@app.handler(FILING_QUEUE, lease_seconds=60)
def file_reply(job: Job) -> dict[str, Any]:
    draft_task = job.run_async(job.client.get_task(job.data["draft_task_id"]))
    if draft_task.status != "completed" or not isinstance(draft_task.output, dict):
        raise NonRetryableError(f"the draft {draft_task.identifier} is {draft_task.status}, with no reply to file")
    entry = {
        "ticket": job.data["ticket"],
        "batch": job.data.get("batch"),
        "filing_task": job.task.identifier,
        "draft_task": draft_task.identifier,
        "to": draft_task.output.get("to"),
        "category": draft_task.output.get("category"),
        "reply": draft_task.output.get("reply"),
        "filed_at": datetime.now(UTC).isoformat(),
    }
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / "filed.jsonl"
    with _lock:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if json.loads(line).get("filing_task") == job.task.identifier:
                    return {"file": str(path), "already_filed": True}
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    job.progress({"filed": entry["ticket"]})
    return {"file": str(path), "already_filed": False}
