"""Errors the domain and engine raise; the API turns each kind into one problem+json type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    """One invalid field: where it is (dotted path) and what is allowed there."""

    field: str
    message: str


class WorkloomError(Exception):
    """Base of every error with a stable machine-readable ``code``."""

    code = "error"
    title = "Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(WorkloomError):
    code = "not-found"
    title = "Not found"


class Conflict(WorkloomError):
    """The request is valid but the resource's current state does not allow it."""

    code = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    code = "invalid-transition"
    title = "Transition not allowed"


class StaleClaim(Conflict):
    """A run operation with a claim token that no longer holds the lease."""

    code = "stale-claim"
    title = "Claim is not current"


class NotHolder(Conflict):
    """An agent acting, without a claim token, on a run that another worker holds."""

    code = "not-holder"
    title = "Run is held by another worker"


class IdempotencyMismatch(Conflict):
    code = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


class ValidationFailed(WorkloomError):
    code = "validation-error"
    title = "Invalid request"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors: list[FieldError] = errors or []


class Unauthorized(WorkloomError):
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(WorkloomError):
    code = "forbidden"
    title = "Forbidden"


class OutcomeUnknown(WorkloomError):
    """The database connection was lost while the change was committing: it may have been saved or not."""

    code = "outcome-unknown"
    title = "Outcome unknown"


@dataclass
class ErrorInfo:
    """What a transport needs to render an error."""

    code: str
    title: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
