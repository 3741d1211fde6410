"""The one ASGI middleware of the application's own: request ids, the access log and request count, and
the request body's limits (size and type).

One layer rather than one for each: the count needs the status that the request's id already watches for,
and the headers are read once. (Measured in-process, the merge did not move a request's CPU.)"""

from __future__ import annotations

import itertools
import logging
import secrets
import time

from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workloom.api import problems
from workloom.api.logs import request_id

log = logging.getLogger("workloom.http")

_JSON_TYPES = (b"application/json", b"application/problem+json")
_WITH_BODY = ("POST", "PUT", "PATCH")
# The methods counted by name; any other is counted as "other", so a client cannot grow the metric's series.
_COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_REQUEST_ID = 100
# Logged and counted for a request whose client went away before it could be answered (nginx's code): not
# a 500, which would page someone for a dropped connection.
CLIENT_CLOSED = 499


class Edge:
    """Where a request enters the application (inside Starlette's error handling, outside its routing).

    - Every request gets an id (``X-Request-ID``, kept if the client sent a sane one; else this process's
      random prefix and a counter: unique, which is all an id must be, without 16 random bytes a request),
      answered in the response header and carried by every log line written while it runs.
    - Every request is logged once and counted in ``requests`` (by method and status) when it ends.
    - A body over ``limit`` bytes, declared or not, is refused with 413; a body that is not JSON with 415.
      The body is read whole first (it is small, by the limit), so an oversize one is answered here
      instead of surfacing as a parse error inside the framework."""

    def __init__(self, app: ASGIApp, limit: int, requests: Counter | None = None) -> None:
        self.app = app
        self.limit = limit
        self.requests = requests
        self._counted: dict[tuple[str, int], Counter] = {}
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if 0 < len(incoming) <= _MAX_REQUEST_ID and incoming.isprintable() else self._next_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            refusal = self._refusal(scope["method"], headers)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            if scope["method"] in _WITH_BODY and _has_body(headers):
                buffered = await self._buffered(scope, receive, send_with_id)
                if buffered is None:
                    if status == 500:  # nothing was answered: the client went away mid-body
                        status = CLIENT_CLOSED
                    return
                receive = buffered
            await self.app(scope, receive, send_with_id)
        finally:
            self._count(scope["method"], status)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id.reset(token)

    def _refusal(self, method: str, headers: dict[bytes, bytes]) -> Response | None:
        """The answer to a request refused by its headers alone, or None."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return self._too_large()
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if method in _WITH_BODY and _has_body(headers) and content_type not in _JSON_TYPES:
            return problems.problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "request bodies are JSON; send the header 'Content-Type: application/json'",
                errors=[{"field": "Content-Type", "message": "must be application/json"}],
            )
        return None

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The whole body read, as a ``receive`` that replays it; None when it was refused (413) or the
        client went away before sending all of it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large()(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay

    def _too_large(self) -> Response:
        return problems.problem(
            413,
            "body-too-large",
            "Request body too large",
            f"the body is over {self.limit} bytes; send less, or raise WORKLOOM_MAX_BODY_BYTES",
            errors=[{"field": "body", "message": f"must be at most {self.limit} bytes"}],
        )

    def _count(self, method: str, status: int) -> None:
        if self.requests is None:
            return
        key = (method if method in _COUNTED_METHODS else "other", status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.requests.labels(*key)
        child.inc()

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def _has_body(headers: dict[bytes, bytes]) -> bool:
    declared = headers.get(b"content-length")
    return (declared is not None and declared not in (b"", b"0")) or b"transfer-encoding" in headers
