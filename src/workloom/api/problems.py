"""Errors as ``application/problem+json``: a stable type, a title, and a detail that says what to fix."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from workloom.domain import errors

PROBLEM_BASE = "https://workloom.dev/problems/"
STATUS_BY_ERROR: list[tuple[type[errors.WorkloomError], int]] = [
    (errors.ValidationFailed, 422),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.OutcomeUnknown, 503),
]


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json", headers=headers)


def from_error(error: errors.WorkloomError) -> Response:
    status, body = problem_fields(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json", headers=headers)


def problem_fields(error: errors.WorkloomError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the problem body of ``error`` (also how a batch reports one item's refusal)."""
    status = next((code for kind, code in STATUS_BY_ERROR if isinstance(error, kind)), 400)
    extra: dict[str, Any] = {k: v for k, v in error.extra.items() if isinstance(v, str | int | list)}
    if "status" in extra:  # a transition refused names the resource's status; ``status`` is the HTTP one
        extra["current_status"] = extra.pop("status")
    for member in ("type", "title", "detail", "errors"):
        extra.pop(member, None)
    if isinstance(error, errors.ValidationFailed):
        extra["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
    body = {"type": PROBLEM_BASE + error.code, "title": error.title, "status": status, "detail": error.detail, **extra}
    return status, body


def field_name(loc: tuple[Any, ...]) -> str:
    """The request field a validation error points at, without its body/query/path prefix."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field; remove it"
    return str(err.get("msg", "is invalid"))


def from_validation(exc: RequestValidationError) -> Response:
    details = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in details):
        return problem(
            400,
            "malformed-json",
            "Body is not valid JSON",
            "the request body could not be parsed as JSON; send a JSON object",
            errors=[{"field": "body", "message": "must be valid JSON"}],
        )
    fields = [{"field": field_name(tuple(e.get("loc", ()))), "message": _message(e)} for e in details]
    names = ", ".join(dict.fromkeys(f["field"] for f in fields))
    return problem(422, "validation-error", "Invalid request", f"invalid fields: {names}", errors=fields)


def install(app: FastAPI) -> None:
    async def on_workloom_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.WorkloomError)
        return from_error(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return from_validation(exc)

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = str(exc.detail) if exc.status_code != 404 else "no such endpoint; see /openapi.json"
        return problem(exc.status_code, code, str(exc.detail), detail)

    app.add_exception_handler(errors.WorkloomError, on_workloom_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
