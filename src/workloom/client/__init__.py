"""Workloom's Python SDK: ``Client`` and ``AsyncClient`` over the native ``/v1`` API.

    from workloom.client import Client

    with Client() as wl:  # WORKLOOM_URL and WORKLOOM_API_KEY from the environment
        task = wl.create_task("Summarise the report", queue="work", data={"url": "https://example.com/r.pdf"})
        for claim in wl.claim("work", wait_seconds=10):
            wl.complete_run(claim.run.id, claim.claim_token, result={"summary": "..."})

Resources come back as pydantic models (``Task``, ``Run``, ``Queue``, ``Claim``, ``Event``, ``TaskTree``,
``Page``); errors as subclasses of ``WorkloomError`` carrying the server's problem+json fields.
"""

from workloom.client._calls import QueueSettings, TaskChanges, TaskFields, TaskFilters
from workloom.client._config import DEFAULT_URL, KEY_ENV, URL_ENV
from workloom.client._retry import RetryPolicy
from workloom.client._sse import AsyncEventStream, EventStream
from workloom.client.aio import AsyncClient
from workloom.client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    StaleClaimError,
    TransportError,
    ValidationError,
    WorkloomError,
)
from workloom.client.models import Actor, Claim, Event, Page, Queue, Run, RunOutcome, Task, TaskTree
from workloom.client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "KEY_ENV",
    "URL_ENV",
    "Actor",
    "AsyncClient",
    "AsyncEventStream",
    "AuthenticationError",
    "BadRequestError",
    "Claim",
    "Client",
    "ConflictError",
    "Event",
    "EventStream",
    "FieldError",
    "IdempotencyKeyReusedError",
    "InvalidTransitionError",
    "NotFoundError",
    "OutcomeUnknownError",
    "Page",
    "PermissionDeniedError",
    "Queue",
    "QueueSettings",
    "RateLimitedError",
    "RetryPolicy",
    "Run",
    "RunOutcome",
    "ServerError",
    "StaleClaimError",
    "Task",
    "TaskChanges",
    "TaskFields",
    "TaskFilters",
    "TaskTree",
    "TransportError",
    "ValidationError",
    "WorkloomError",
]
