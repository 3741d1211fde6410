"""The load generator's HTTP client: HTTP/1.1 keep-alive connections, each a bare asyncio protocol whose
responses httptools parses (the parser uvicorn's server side uses), request bodies written by orjson.

It shares the two cores with the server and PostgreSQL, so what it spends a request is taken from what it
measures. httpx spent 1.4 ms of CPU a request under 16 connections; aiohttp 0.09 ms on ``/healthz`` but
~0.5 ms on a create (its request and response objects, header multidicts, cookie handling, a ``json.dumps``
and a ``json.loads``); this ~0.19 ms on the same create (measured here, the same server, alternating runs).
Like wrk or h2load, it sends what the bench asks and reads the answer whole: no redirects, cookies or
compression.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson


class Reply:
    """A response read whole: its status and body (JSON when it is JSON)."""

    __slots__ = ("_body", "status_code")

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self._body = body

    @property
    def text(self) -> str:
        return self._body.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self._body)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._answer: asyncio.Future[Reply] | None = None
        self._heard = False  # any byte of the current answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(_Lost(heard=self._heard))

    def data_received(self, data: bytes) -> None:
        self._heard = True
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        reply = Reply(self._parser.get_status_code(), b"".join(self._body))
        self._body = []
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(reply)

    async def send(self, request: bytes) -> Reply:
        assert self.transport is not None
        self._heard = False
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._answer
        finally:
            self._answer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Lost(ConnectionError):
    def __init__(self, *, heard: bool) -> None:
        super().__init__("the server closed the connection" + (" mid-answer" if heard else ""))
        self.heard = heard


class Http:
    """Requests to one server over at most ``connections`` kept-alive connections, ``headers`` on every one."""

    def __init__(self, base: str, headers: dict[str, str] | None = None, connections: int = 64) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the load generator speaks plain http to a host: {base!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": parts.netloc, **(headers or {})}.items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Reply:
        body = orjson.dumps(json)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\n{self._head}{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return await self._exchange(head.encode() + body)

    async def get(self, path: str) -> Reply:
        return await self._exchange(f"GET {path} HTTP/1.1\r\n{self._head}\r\n".encode())

    async def _exchange(self, request: bytes) -> Reply:
        async with self._slots:
            connection = self._kept()
            if connection is not None:
                try:
                    reply = await connection.send(request)
                except _Lost as lost:
                    # The server closed a kept connection as the request went out (its keep-alive ran out):
                    # it read none of it, so it goes again, on a new connection. Mid-answer, it did read it.
                    if lost.heard:
                        raise
                else:
                    self._idle.append(connection)
                    return reply
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(_Connection, self._host, self._port)
            reply = await connection.send(request)
            self._idle.append(connection)
            return reply

    def _kept(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
