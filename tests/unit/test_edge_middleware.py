"""The request middleware's counting, seen through the counter it fills (the server's /metrics shows the
same counter; tests/api/test_api_lifecycle.py reads it there)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import Message, Receive, Scope, Send

from workloom.api.middleware import Edge


def request(method: str, body_parts: list[bytes] | None = None) -> tuple[Scope, Receive]:
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")] if body_parts else []
    scope = {"type": "http", "method": method, "path": "/v1/tasks", "headers": headers}
    messages: list[Message] = [{"type": "http.request", "body": part, "more_body": True} for part in body_parts or []]
    messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        return messages.pop(0)

    return scope, receive


async def answer_200(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def served(method: str, body_parts: list[bytes] | None = None) -> tuple[dict[tuple[str, str], float], list[Any]]:
    registry = CollectorRegistry()
    requests = Counter("requests", "", ["method", "status"], registry=registry)
    edge = Edge(answer_200, limit=1_000, requests=requests)
    sent: list[Any] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope, receive = request(method, body_parts)
    asyncio.run(edge(scope, receive, send))
    counted = {
        (s.labels["method"], s.labels["status"]): s.value
        for s in next(iter(registry.collect())).samples
        if s.name == "requests_total"
    }
    return counted, sent


def test_a_client_gone_before_its_body_ended_is_counted_499_and_answered_nothing() -> None:
    counted, sent = served("POST", [b'{"title": '])
    assert counted == {("POST", "499"): 1.0}
    assert sent == []


def test_a_body_over_the_limit_is_counted_as_its_413() -> None:
    counted, sent = served("POST", [b"x" * 600, b"x" * 600])
    assert counted == {("POST", "413"): 1.0}
    assert sent[0]["status"] == 413


def test_methods_outside_http_s_own_are_counted_together() -> None:
    assert served("BREW")[0] == {("other", "200"): 1.0}
    assert served("GET")[0] == {("GET", "200"): 1.0}
