"""Request dependencies of the dialect: the engine and the caller, read through the host application.

The dialect is a sub-application mounted on the native app, so ``request.app`` is the dialect; the engine
lives on the host app's state (set by its lifespan), which ``mount`` links as ``state.host``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from workloom.domain.errors import NotFound
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey


async def engine(request: Request) -> Workloom:
    wl: Workloom = request.app.state.host.state.workloom
    return wl


async def principal(request: Request, wl: Workloom = Depends(engine)) -> Principal:
    """The caller, from ``Authorization: Bearer <key>``; an agent key acts as ``{kind: agent_session}``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    found = await wl.access.authenticate(token.strip() if scheme.lower() == "bearer" else "")
    request.state.principal = found
    return found


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def empty(status: int = 204) -> Response:
    return Response(status_code=status)


async def check_workspace(wl: Workloom, p: Principal, wanted: str | None) -> None:
    """AGH's ``workspace`` filter ("path, name, or ID"). A key sees only its own workspace (by id or
    name); any other is 404, as everything of another workspace is."""
    if wanted is None:
        return
    own = await wl.access.workspace(p)
    if wanted not in (own.id, own.name):
        raise NotFound(f"workspace {wanted!r} not found; this API key sees only its own workspace")


async def keyed(request: Request, body_key: str | None, header: IdempotencyKey | None) -> IdempotencyKey | None:
    """AGH sends an idempotency key in the body of claim and start; the native header works everywhere.
    The header wins when both are given."""
    if header is not None or body_key is None:
        return header
    body = await request.body()
    return IdempotencyKey(
        key=body_key, request=b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), body)
    )
