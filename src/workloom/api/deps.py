"""Request dependencies: the engine, the caller, and the idempotency key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from workloom.domain.errors import FieldError, ValidationFailed
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey

MAX_IDEMPOTENCY_KEY = 255


async def engine(request: Request) -> Workloom:
    wl: Workloom = request.app.state.workloom
    return wl


async def principal(request: Request, wl: Workloom = Depends(engine)) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    found = await wl.access.authenticate(token.strip())
    request.state.principal = found
    return found


async def idempotency(request: Request) -> IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(
            "Idempotency-Key is not valid",
            [FieldError("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")],
        )
    body = await request.body()
    return IdempotencyKey(key=key, request=b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), body))


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def abandoned(request: Request) -> Callable[[], Awaitable[bool]]:
    """For long waits: true once the server is shutting down or the client has disconnected."""

    async def check() -> bool:
        stopping: asyncio.Event = request.app.state.stopping
        return stopping.is_set() or await request.is_disconnected()

    return check
