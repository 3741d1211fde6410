"""The bench's load generator (``bench/loadgen.py``) against a bare HTTP/1.1 server whose connections end
the way a real server's keep-alive ends: it must send a request once, never twice, and never lose one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from bench.loadgen import Http

Behaviour = Callable[[int, int], str]  # (connection number, request number on it) -> "answer" | "drop" | "cut"


class Server:
    """Answers each request with ``{"connection": c, "request": r, "body": <what was sent>}`` unless told to
    ``drop`` the connection without a byte (its keep-alive ran out as the request came) or to ``cut`` it
    mid-answer; counts the requests it read."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.read: list[dict[str, object]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        request = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            request += 1
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            body = json.loads(await reader.readexactly(length))
            what = self.behaviour(connection, request)
            if what == "drop":
                writer.close()
                return
            self.read.append({"connection": connection, "request": request, "body": body})
            answer = json.dumps({"connection": connection, "request": request, "body": body}).encode()
            response = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
                answer
            )
            if what == "cut":
                writer.write(response + answer[:5])
                await writer.drain()
                writer.close()
                return
            writer.write(response + answer)
            await writer.drain()


Serving = Callable[[Behaviour], Awaitable[tuple[Server, str]]]


@pytest.fixture
async def serving() -> AsyncIterator[Serving]:
    """Starts a ``Server`` with a behaviour; its base URL with it."""
    servers: list[asyncio.Server] = []

    async def started(behaviour: Behaviour) -> tuple[Server, str]:
        server = Server(behaviour)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return server, f"http://127.0.0.1:{port}"

    yield started
    for listening in servers:
        listening.close()


async def test_requests_on_a_kept_connection_come_back_whole_and_in_order(serving: Serving) -> None:
    server, base = await serving(lambda _c, _r: "answer")
    http = Http(base, {"Authorization": "Bearer k"})
    replies = [await http.post("/v1/tasks", json={"n": i}) for i in range(3)]
    await http.aclose()

    assert [r.status_code for r in replies] == [201, 201, 201]
    assert [r.json()["body"] for r in replies] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert server.connections == 1  # kept alive
    assert [r.json()["request"] for r in replies] == [1, 2, 3]


async def test_a_kept_connection_the_server_dropped_unanswered_is_sent_again_once_on_a_new_one(
    serving: Serving,
) -> None:
    # The first connection answers one request, then drops the next unread (its keep-alive ran out).
    server, base = await serving(lambda c, r: "drop" if (c, r) == (1, 2) else "answer")
    http = Http(base)
    first = await http.post("/v1/tasks", json={"n": 0})
    second = await http.post("/v1/tasks", json={"n": 1})
    await http.aclose()

    assert (first.json()["connection"], second.json()["connection"]) == (1, 2)
    assert [entry["body"] for entry in server.read] == [{"n": 0}, {"n": 1}]  # each read once


async def test_a_connection_cut_mid_answer_is_an_error_not_a_second_request(serving: Serving) -> None:
    server, base = await serving(lambda c, r: "cut" if (c, r) == (1, 2) else "answer")
    http = Http(base)
    await http.post("/v1/tasks", json={"n": 0})
    with pytest.raises(ConnectionError, match="mid-answer"):
        await http.post("/v1/tasks", json={"n": 1})
    await http.aclose()

    assert [entry["body"] for entry in server.read] == [{"n": 0}, {"n": 1}]  # the server had it: not sent again
