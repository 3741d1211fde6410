"""When to try a request again, and how long to wait first; the same rules for both clients and for streams.

Retried: a connection that could not be opened (the request never left), a dropped connection when the call
is safe to repeat (a GET, or one that carries an ``Idempotency-Key``), and the answers 429 and 503, after
``Retry-After`` seconds when the server sent it, otherwise after a jittered exponential backoff — except a
503 ``outcome-unknown`` (the call may have been done) to a call that is not safe to repeat.
Never retried: every other 4xx, and other 5xx.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from workloom.client import errors

RETRY_STATUSES = frozenset({429, 503})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` extra attempts after the first; waits grow from ``backoff_base`` doubling up to
    ``backoff_cap`` seconds, each drawn between half and all of that (so that clients spread out)."""

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** max(retry - 1, 0))
        return float(ceiling / 2 + self.random() * ceiling / 2)


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the OS error sits a few causes down, under httpcore's and anyio's wrappers
        if seen is None:
            return False
        text = str(seen).lower()
        if isinstance(seen, ConnectionRefusedError) or "refused" in text or "errno 111" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe(exc: httpx.TransportError) -> str:
    """A short reason for a transport failure, for the error message."""
    text = str(exc)
    if isinstance(exc, httpx.ConnectError) and _refused(exc):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return text or type(exc).__name__


def transport_error(exc: httpx.TransportError, url: str, attempts: int) -> errors.TransportError:
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return errors.TransportError(f"the Workloom server at {url} did not answer{tries}: {describe(exc)}")


class Attempts:
    """The retry state of one logical call: ask it after each try whether, and after how long, to try again."""

    def __init__(self, policy: RetryPolicy, *, retry_safe: bool, url: str) -> None:
        self.policy = policy
        self.retry_safe = retry_safe
        self.url = url
        self.retries = 0

    def after_response(self, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again, or ``None`` when this answer is the one to return or raise."""
        if response.status_code not in RETRY_STATUSES or self.retries >= self.policy.max_retries:
            return None
        if not self.retry_safe and isinstance(errors.from_response(response), errors.OutcomeUnknownError):
            return None  # it may have been done: repeated, it could be done twice
        self.retries += 1
        wait = errors.retry_after(response.headers)
        return wait if wait is not None else self.policy.backoff(self.retries)

    def after_error(self, exc: httpx.TransportError) -> float:
        """Seconds to wait before trying again; raises ``TransportError`` when the call must not be repeated."""
        if self.retries >= self.policy.max_retries or not (self.retry_safe or isinstance(exc, _NEVER_SENT)):
            raise transport_error(exc, self.url, self.retries + 1) from exc
        self.retries += 1
        return self.policy.backoff(self.retries)


class Reconnects:
    """The reconnection state of an event stream.

    A stream gives up only after ``max_retries`` consecutive attempts that could not open it; a stream that
    opened and later ended (a server restart, a proxy's idle limit) is reopened however often that happens,
    after a short jittered wait, as a browser's EventSource would.
    """

    def __init__(self, policy: RetryPolicy, *, url: str) -> None:
        self.policy = policy
        self.url = url
        self.failures = 0

    def opened(self) -> None:
        self.failures = 0

    def dropped(self, exc: httpx.TransportError | None = None) -> float:
        """The stream ended or could not be opened: the wait before reconnecting, or raise once out of tries."""
        self.failures += 1
        if self.failures > self.policy.max_retries:
            if exc is None:
                raise errors.TransportError(f"the event stream from {self.url} ended (max_retries is 0)")
            raise transport_error(exc, self.url, self.failures) from exc
        return self.policy.backoff(self.failures)

    def refused(self, response: httpx.Response) -> float:
        """The server answered the stream request with an error: wait on 429/503, raise the typed error otherwise."""
        if response.status_code not in RETRY_STATUSES or self.failures >= self.policy.max_retries:
            raise errors.from_response(response)
        self.failures += 1
        wait = errors.retry_after(response.headers)
        return wait if wait is not None else self.policy.backoff(self.failures)
