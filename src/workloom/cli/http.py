"""The SDK client for commands that go through the API: configured from ``WORKLOOM_URL`` and
``WORKLOOM_API_KEY``, with every ``WorkloomError`` turned into one red line that says what went wrong
and what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from workloom.cli.output import fail
from workloom.client import (
    DEFAULT_URL,
    KEY_ENV,
    URL_ENV,
    AuthenticationError,
    Client,
    NotFoundError,
    PermissionDeniedError,
    TransportError,
    WorkloomError,
)

KEY_HINT = (
    f"Set {KEY_ENV} to an API key, e.g. one made with "
    "'workloom keys create --workspace default --role member' (or the key 'workloom serve' printed at first start)."
)
Hints = Mapping[type[WorkloomError], str]
"""What to do about an error, by its class (the first class the error is an instance of wins)."""
SERVE_HINT = f"Start it with 'workloom serve', or set {URL_ENV} to the address it listens on."

# A person is waiting: a server that is down should be reported within a second or so, not after the
# SDK's default backoff. Bulk commands (import) ask for more retries.
CLI_RETRIES = 2
BULK_RETRIES = 5


def server_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def unreachable_reason(exc: BaseException) -> str:
    """Why nothing answered, in a few words: ``connection refused``, ``no answer in time``, …"""
    seen: BaseException | None = exc.__cause__ or exc
    for _ in range(10):  # the OS error sits a few causes down, under httpx's and anyio's wrappers
        if seen is None:
            break
        text = str(seen).lower()
        if isinstance(seen, ConnectionRefusedError) or "refused" in text or "errno 111" in text:
            return "connection refused"
        if isinstance(seen, httpx.TimeoutException):
            return "no answer in time"
        seen = seen.__cause__ or seen.__context__
    cause = exc.__cause__
    if isinstance(cause, httpx.TransportError):
        return str(cause) or type(cause).__name__
    return str(exc)


def error_message(exc: WorkloomError) -> str:
    """One line: the problem's title and status, its detail, then each invalid field with what is allowed."""
    return str(exc)


def hint_for(exc: WorkloomError, hints: Hints | None = None) -> str | None:
    """What to do about an error: the command's own hint for its class if it gave one, else a general one."""
    for cls, hint in (hints or {}).items():
        if isinstance(exc, cls):
            return hint
    if isinstance(exc, AuthenticationError):
        return KEY_HINT
    if isinstance(exc, PermissionDeniedError):
        return "This key's role may not do that; use a key with a broader role (admin or member)."
    if isinstance(exc, NotFoundError):
        return "Check the name or id: 'workloom tasks list' and 'workloom queues list' show what exists."
    if exc.errors:
        return "Fix the fields named above and try again."
    return None


def report(exc: WorkloomError, url: str, hints: Hints | None = None) -> None:
    """Print the error as one red line plus what to do, and exit 1."""
    if isinstance(exc, TransportError):
        fail(f"The Workloom server isn't reachable at {url} ({unreachable_reason(exc)}).", hint=SERVE_HINT)
    fail(error_message(exc), hint=hint_for(exc, hints))


def make_client(*, max_retries: int = CLI_RETRIES, need_key: bool = True) -> Client:
    """An SDK client from the environment; without a key (when one is needed) the command ends with the fix."""
    if need_key and not os.environ.get(KEY_ENV):
        fail(f"No API key: {KEY_ENV} is not set.", hint=KEY_HINT)
    return Client(max_retries=max_retries, backoff_base=0.25, backoff_cap=4.0, headers={"User-Agent": "workloom-cli"})


@contextmanager
def connect(
    *,
    need_key: bool = True,
    max_retries: int = CLI_RETRIES,
    hints: Hints | None = None,
) -> Iterator[Client]:
    """The client for one command; any ``WorkloomError`` inside the block ends the command cleanly."""
    client = make_client(max_retries=max_retries, need_key=need_key)
    try:
        with client:
            yield client
    except WorkloomError as exc:
        report(exc, client.base_url, hints)
