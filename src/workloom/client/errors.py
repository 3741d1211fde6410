"""Typed exceptions carrying the server's ``application/problem+json`` fields.

Catch the narrowest class that describes what you can handle: ``NotFoundError`` for a missing task,
``StaleClaimError`` for a lost lease, ``ValidationError`` to show field messages to a user, ``TransportError``
when the server could not be reached at all. Every class derives from ``WorkloomError``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

PROBLEM_BASE = "https://workloom.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field of a request: where it is (a dotted path) and what is allowed there."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class WorkloomError(Exception):
    """Base of every SDK error. For an HTTP error the problem+json fields are attributes; ``body`` is the
    decoded body (a dict) or the raw text when it was not JSON."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        type: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        errors: list[FieldError] | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors: list[FieldError] = list(errors or [])
        self.body = body
        self.request_id = request_id
        super().__init__(message if message is not None else self._describe())

    @property
    def code(self) -> str | None:
        """The problem type without its URL prefix, e.g. ``stale-claim``."""
        if self.type is None:
            return None
        return self.type.rsplit("/", 1)[-1]

    def _describe(self) -> str:
        title = self.title or (httpx.codes.get_reason_phrase(self.status) if self.status else "") or "Error"
        line = f"{title} (HTTP {self.status})" if self.status else title
        if self.detail:
            line += f": {self.detail}"
        if self.errors:
            line += " — " + "; ".join(str(e) for e in self.errors)
        return line


class BadRequestError(WorkloomError):
    """The request could not be read: malformed JSON (400), too large (413), not JSON (415)."""


class ValidationError(BadRequestError):
    """The request was read but fields are invalid (422, ``validation-error``); ``errors`` names them."""


class AuthenticationError(WorkloomError):
    """No API key, or one the server does not know (401). Set ``WORKLOOM_API_KEY`` or pass ``api_key``."""


class PermissionDeniedError(WorkloomError):
    """The key's role may not do this (403)."""


class NotFoundError(WorkloomError):
    """No such resource in this workspace (404)."""


class ConflictError(WorkloomError):
    """The resource's current state does not allow the request (409)."""


class InvalidTransitionError(ConflictError):
    """The task or run is not in a state that allows this transition (409 ``invalid-transition``)."""


class StaleClaimError(ConflictError):
    """The claim token no longer holds the run's lease (409 ``stale-claim``): stop working on it."""


class IdempotencyKeyReusedError(ConflictError):
    """The same ``Idempotency-Key`` was sent before with a different request (409 ``idempotency-key-reused``)."""


class RateLimitedError(WorkloomError):
    """Too many requests (429), still refused after the retries; ``retry_after`` is the server's wait, if any."""

    retry_after: float | None = None


class ServerError(WorkloomError):
    """The server failed (5xx), still failing after the retries for 503."""


class OutcomeUnknownError(ServerError):
    """The server lost its database connection while the call was committing (503 ``outcome-unknown``): it
    may or may not have been done. Repeated only when that is safe (the call carries an ``Idempotency-Key``,
    as every call of this SDK that creates or transitions does); otherwise look before repeating it."""


class TransportError(WorkloomError):
    """No answer: connection refused, DNS failure, timeout, or a connection that dropped mid-answer."""


_BY_CODE: dict[str, type[WorkloomError]] = {
    "validation-error": ValidationError,
    "stale-claim": StaleClaimError,
    "idempotency-key-reused": IdempotencyKeyReusedError,
    "invalid-transition": InvalidTransitionError,
    "outcome-unknown": OutcomeUnknownError,
}
_BY_STATUS: dict[int, type[WorkloomError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: ValidationError,
    429: RateLimitedError,
}


def error_class(status: int, code: str | None) -> type[WorkloomError]:
    """The exception class for an HTTP status and problem code; the code refines the status."""
    by_status = _BY_STATUS.get(status) or (ServerError if status >= 500 else WorkloomError)
    by_code = _BY_CODE.get(code or "")
    return by_code if by_code is not None and issubclass(by_code, by_status) else by_status


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or ``None`` when absent/unreadable."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def from_response(response: httpx.Response) -> WorkloomError:
    """The typed error for an error response (its body must have been read)."""
    try:
        decoded: Any = response.json()
    except ValueError:
        decoded = None
    problem: Mapping[str, Any] = decoded if isinstance(decoded, Mapping) else {}
    kind = problem.get("type")
    code = kind.rsplit("/", 1)[-1] if isinstance(kind, str) else None
    cls = error_class(response.status_code, code)
    detail = problem.get("detail")
    if detail is None and not problem:
        detail = " ".join(response.text.split())[:300] or None
    error = cls(
        status=response.status_code,
        type=kind if isinstance(kind, str) else None,
        title=str(problem["title"]) if problem.get("title") else None,
        detail=str(detail) if detail is not None else None,
        errors=_field_errors(problem.get("errors")),
        body=decoded if decoded is not None else response.text,
        request_id=response.headers.get("x-request-id"),
    )
    if isinstance(error, RateLimitedError):
        error.retry_after = retry_after(response.headers)
    return error


def from_problem(problem: Mapping[str, Any]) -> WorkloomError:
    """The typed error for a problem body carried inside an answer (one refused item of a batch)."""
    kind = problem.get("type")
    code = kind.rsplit("/", 1)[-1] if isinstance(kind, str) else None
    status = problem.get("status")
    status = status if isinstance(status, int) else 400
    detail = problem.get("detail")
    return error_class(status, code)(
        status=status,
        type=kind if isinstance(kind, str) else None,
        title=str(problem["title"]) if problem.get("title") else None,
        detail=str(detail) if detail is not None else None,
        errors=_field_errors(problem.get("errors")),
        body=dict(problem),
    )


def _field_errors(raw: Any) -> list[FieldError]:
    if not isinstance(raw, list):
        return []
    found = []
    for item in raw:
        if isinstance(item, Mapping):
            found.append(FieldError(str(item.get("field") or ""), str(item.get("message") or "is invalid")))
        else:
            found.append(FieldError("", str(item)))
    return found
