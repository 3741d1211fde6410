"""Workloom's worker runtime: handlers per queue, run with claims, heartbeats, cancellation and graceful shutdown.

    from workloom.worker import Job, Worker

    app = Worker(name="drafter", concurrency=8)

    @app.handler("support")
    async def draft(job: Job) -> dict:
        job.usage(tokens=420)
        return {"reply": "..."}

Run it with ``workloom worker mymodule:app`` (``WORKLOOM_URL`` and ``WORKLOOM_API_KEY`` from the environment),
or ``app.run()``, or ``await app.serve()`` inside an existing event loop.
"""

from workloom.worker.app import Handler, Worker
from workloom.worker.errors import JobCancelled, NonRetryableError, Permanent, Release, default_retryable
from workloom.worker.job import Job, JobState, Reported
from workloom.worker.loader import load_worker
from workloom.worker.logs import JsonFormatter, configure_logging

__all__ = [
    "Handler",
    "Job",
    "JobCancelled",
    "JobState",
    "JsonFormatter",
    "NonRetryableError",
    "Permanent",
    "Release",
    "Reported",
    "Worker",
    "configure_logging",
    "default_retryable",
    "load_worker",
]
