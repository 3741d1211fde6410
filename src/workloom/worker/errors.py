"""Exceptions a handler raises to say how its task should end, and the default retry classification."""

from __future__ import annotations


class NonRetryableError(Exception):
    """A failure another attempt cannot fix (bad input, a refused request): the run fails with
    ``retryable=False`` and the task fails at once. Raise it, raise a subclass, or wrap the cause::

        raise NonRetryableError("ticket has no customer email") from exc
    """


Permanent = NonRetryableError
"""Short alias of ``NonRetryableError``."""


class Release(Exception):
    """Give the task back without spending an attempt (the run is released and the task queued again at
    once), e.g. when a rate limit or a missing resource means "not now" rather than "failed"."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "released by the handler")
        self.reason = reason


class JobCancelled(Exception):
    """Raised by ``Job.raise_if_cancelled()`` once the job was cancelled: the lease was lost (the task was
    canceled, or re-claimed after the lease ran out) or the worker is shutting down past its grace period.
    Whatever the handler returns or raises after that is dropped."""


def default_retryable(exc: BaseException) -> bool:
    """Everything is worth another attempt except a ``NonRetryableError``."""
    return not isinstance(exc, NonRetryableError)
