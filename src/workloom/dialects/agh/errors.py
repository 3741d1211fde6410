"""Errors as AGH shows them: ``{"error": "<what went wrong and what to do>"}`` with a 4xx status.

The status of each engine error kind is a table; validation problems are 400 (AGH has no 422).
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workloom.api.problems import field_name
from workloom.domain import errors

log = logging.getLogger("workloom.dialects.agh")

STATUS_BY_ERROR: list[tuple[type[errors.WorkloomError], int]] = [
    (errors.ValidationFailed, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),  # includes invalid transitions, stale claims and reused idempotency keys
    (errors.OutcomeUnknown, 503),
]
HTTP_TEXT = {404: "no such endpoint", 405: "method not allowed on this endpoint"}


def error(status: int, text: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(orjson.dumps({"error": text}), status_code=status, media_type="application/json", headers=headers)


def from_workloom(exc: errors.WorkloomError) -> Response:
    status = next((code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind)), 400)
    text = exc.detail
    if isinstance(exc, errors.ValidationFailed) and exc.errors:
        text = f"{text}: " + "; ".join(f"{e.field} {e.message}" for e in exc.errors)
    return error(status, text)


def from_validation(exc: RequestValidationError) -> Response:
    details = list(exc.errors())
    if any(d.get("type") == "json_invalid" for d in details):
        return error(400, "the request body is not valid JSON; send a JSON object")
    if any(d.get("type") == "model_attributes_type" and tuple(d.get("loc", ())) == ("body",) for d in details):
        return error(400, "the request body must be a JSON object")
    problems = "; ".join(f"{field_name(tuple(d.get('loc', ())))} {d.get('msg', 'is invalid')}" for d in details)
    return error(400, f"invalid request: {problems}")


def install(app: FastAPI) -> None:
    async def on_workloom(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.WorkloomError)
        return from_workloom(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return from_validation(exc)

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error(exc.status_code, HTTP_TEXT.get(exc.status_code, str(exc.detail)))

    async def on_unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in the AGH dialect", exc_info=exc)
        return error(500, "internal error; the server log has the details")

    app.add_exception_handler(errors.WorkloomError, on_workloom)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


class NativeRefusals:
    """Host middleware for the dialect's paths: a refusal the native app answers before the dialect sees
    the request (body too large, not JSON) arrives as problem+json; AGH clients get ``{"error": detail}``.

    Only ``application/problem+json`` answers are touched (they are small and never streamed)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def translate(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"application/problem+json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                reshaped = error(held["status"], _detail(b"".join(chunks)))
                kept = [(k, v) for k, v in held.get("headers", []) if k not in _REPLACED_HEADERS]
                await send({**held, "headers": kept + reshaped.raw_headers})
                await send({"type": "http.response.body", "body": reshaped.body})
                return
            await send(message)

        await self.app(scope, receive, translate)


_REPLACED_HEADERS = (b"content-type", b"content-length", b"www-authenticate")


def _detail(body: bytes) -> str:
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "the request was refused"
    return str(problem.get("detail") or problem.get("title") or "the request was refused")
