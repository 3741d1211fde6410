"""The SDK's exceptions: one class per kind of problem, the problem+json fields kept, a one-line message."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from workloom.client import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    StaleClaimError,
    ValidationError,
    WorkloomError,
)
from workloom.client.errors import from_response, retry_after


def answer(status: int, code: str | None = None, **fields: object) -> httpx.Response:
    body = {"type": f"https://workloom.dev/problems/{code}", "title": "Problem", "status": status, "detail": "d"}
    return httpx.Response(status, json={**body, **fields}, headers={"x-request-id": "req-1"})


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "malformed-json", BadRequestError),
        (413, "body-too-large", BadRequestError),
        (415, "unsupported-media-type", BadRequestError),
        (422, "validation-error", ValidationError),
        (400, "validation-error", ValidationError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", PermissionDeniedError),
        (404, "not-found", NotFoundError),
        (409, "conflict", ConflictError),
        (409, "stale-claim", StaleClaimError),
        (409, "idempotency-key-reused", IdempotencyKeyReusedError),
        (409, "invalid-transition", InvalidTransitionError),
        (429, "rate-limited", RateLimitedError),
        (500, "internal", ServerError),
        (503, "unavailable", ServerError),
        (405, "method-not-allowed", WorkloomError),
    ],
)
def test_each_status_and_type_has_its_class(status: int, code: str, expected: type[WorkloomError]) -> None:
    error = from_response(answer(status, code))
    assert type(error) is expected
    assert (error.status, error.code, error.title, error.detail) == (status, code, "Problem", "d")
    assert error.type == f"https://workloom.dev/problems/{code}" and error.request_id == "req-1"


def test_a_code_never_moves_an_error_out_of_its_status_class() -> None:
    assert type(from_response(answer(404, "stale-claim"))) is NotFoundError


def test_validation_errors_name_the_fields_in_one_line() -> None:
    errors = [
        {"field": "priority", "message": "must be one of low, medium"},
        {"field": "title", "message": "is required"},
    ]
    error = from_response(answer(422, "validation-error", title="Invalid request", detail="2 fields", errors=errors))
    assert isinstance(error, ValidationError) and isinstance(error, BadRequestError)
    assert error.errors == [FieldError("priority", "must be one of low, medium"), FieldError("title", "is required")]
    assert str(error) == (
        "Invalid request (HTTP 422): 2 fields — priority: must be one of low, medium; title: is required"
    )
    assert error.body["errors"] == errors  # the raw body, extra members and all


def test_a_body_that_is_not_json_still_gives_a_useful_message() -> None:
    error = from_response(httpx.Response(502, text="<html>\n  Bad gateway\n</html>"))
    assert isinstance(error, ServerError)
    assert str(error) == "Bad Gateway (HTTP 502): <html> Bad gateway </html>"
    assert error.body == "<html>\n  Bad gateway\n</html>" and error.errors == [] and error.type is None


def test_rate_limited_carries_the_servers_wait() -> None:
    response = httpx.Response(429, json={"title": "Slow down"}, headers={"Retry-After": "12"})
    error = from_response(response)
    assert isinstance(error, RateLimitedError) and error.retry_after == 12.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-1"}) == 0.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    now = datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=now) == 30.0


def test_plain_errors_read_well() -> None:
    assert str(WorkloomError("just a message")) == "just a message"
    assert str(NotFoundError(status=404, detail="task WL-9 does not exist")) == (
        "Not Found (HTTP 404): task WL-9 does not exist"
    )
