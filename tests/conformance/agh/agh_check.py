"""Calling the AGH dialect as an AGH client would, and checking every answer against the seed document.

``AGH.call("POST /api/tasks", json=...)`` sends the operation to ``/compat/agh`` and checks the status,
that every field path of the document's success example is present (``null`` allowed, and nothing is
required below a ``null``), that each value has the example's type, and that enum fields hold one of the
documented values. ``AGH.refused(...)`` checks an error: the status and exactly ``{"error": "<text>"}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from agh_seed import Operation, field_enums, leaves, operations

PREFIX = "/compat/agh"


def _segments(path: str) -> list[tuple[str, bool]]:
    return [(part.removesuffix("[]"), part.endswith("[]")) for part in path.split(".")]


def values_at(body: Any, path: str) -> tuple[list[Any], list[str]]:
    """The values found at ``path`` in every list element, and the problems met on the way."""
    nodes: list[Any] = [body]
    problems: list[str] = []
    walked = ""
    for name, is_list in _segments(path):
        walked = f"{walked}.{name}" if walked else name
        following: list[Any] = []
        for node in nodes:
            if node is None:
                continue  # a null parent: nothing below it is required
            if not isinstance(node, dict):
                problems.append(f"{walked}: parent is {type(node).__name__}, not an object")
                continue
            if name not in node:
                problems.append(f"{walked}: missing")
                continue
            value = node[name]
            if is_list and value is not None:
                if not isinstance(value, list):
                    problems.append(f"{walked}: {type(value).__name__}, not a list")
                    continue
                following.extend(value)
            else:
                following.append(value)
        nodes = following
    return nodes, problems


def _type_problem(path: str, example: Any, value: Any) -> str | None:
    if value is None or example is None:
        return None
    if isinstance(example, bool):
        ok = isinstance(value, bool)
    elif isinstance(example, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(example, str):
        ok = isinstance(value, str)
        if ok and _is_timestamp(example):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return f"{path}: {value!r} is not an ISO 8601 date-time"
    elif isinstance(example, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, list)
    return None if ok else f"{path}: {value!r} is not a {type(example).__name__} like the example"


def _is_timestamp(text: str) -> bool:
    return len(text) >= 20 and text[4] == "-" and text[10] == "T"


def conformance_problems(op: Operation, body: Any, example: Any = None) -> list[str]:
    """Everything about ``body`` that does not match the operation's success example."""
    example = op.success if example is None else example
    problems: list[str] = []
    enums = field_enums(op)
    for path, sample in leaves(example).items():
        found, missing = values_at(body, path)
        problems.extend(missing)
        for value in found:
            if (problem := _type_problem(path, sample, value)) is not None:
                problems.append(problem)
            allowed = enums.get(path)
            if allowed is not None and value is not None and value not in allowed:
                problems.append(f"{path}: {value!r} is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(problems))


@dataclass
class AGH:
    """A client of the dialect for one API key, checking each answer against the document."""

    client: httpx.Client

    def _send(self, key: str, ids: dict[str, str], **kwargs: Any) -> tuple[Operation, httpx.Response]:
        op = operations()[key]
        path = op.path.format(**ids)
        return op, self.client.request(op.method, PREFIX + path, **kwargs)

    def call(self, key: str, ids: dict[str, str] | None = None, *, status: int = 200, **kwargs: Any) -> Any:
        """Send the operation and check a successful answer; returns the decoded body (None when empty)."""
        op, response = self._send(key, ids or {}, **kwargs)
        assert response.status_code == status, f"{key}: {response.status_code} {response.text}"
        if op.success is None or status == 204:
            assert response.content == b"", f"{key}: expected no body, got {response.text}"
            return None
        assert response.headers["content-type"].startswith("application/json"), key
        body = response.json()
        problems = conformance_problems(op, body)
        assert not problems, f"{key} does not match the document:\n  " + "\n  ".join(problems)
        return body

    def refused(self, key: str, ids: dict[str, str] | None = None, *, status: int, **kwargs: Any) -> str:
        """Send the operation expecting an error; checks the document's error shape and returns the text."""
        _, response = self._send(key, ids or {}, **kwargs)
        assert response.status_code == status, f"{key}: expected {status}, got {response.status_code} {response.text}"
        assert response.headers["content-type"].startswith("application/json"), key
        body = response.json()
        assert isinstance(body, dict), f"{key}: {body!r}"
        assert set(body) == {"error"}, f"{key}: the error shape is {{'error': str}}, got {body!r}"
        assert isinstance(body["error"], str), f"{key}: {body!r}"
        assert body["error"], f"{key}: the error text is empty"
        return str(body["error"])

    @contextmanager
    def stream(self, key: str, ids: dict[str, str], **kwargs: Any) -> Iterator[EventStream]:
        """Open a ``text/event-stream`` operation; each message's data is checked against the example."""
        op = operations()[key]
        with self.client.stream("GET", PREFIX + op.path.format(**ids), **kwargs) as response:
            assert response.status_code == 200, response.read().decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield EventStream(response, op)


def filled(body: Any, *paths: str) -> None:
    """Assert that each list path holds at least one element, so the paths below it were really checked."""
    for path in paths:
        found, problems = values_at(body, path)
        assert not problems, problems
        assert any(isinstance(v, list) and v for v in found), f"{path} is empty; the test should fill it"


@dataclass
class Message:
    id: str | None
    event: str | None
    data: Any


@dataclass
class EventStream:
    """Reads ``text/event-stream`` as EventSource does; comment lines (keep-alives) are kept aside.
    Reads are bounded by a deadline and by the number of messages, never by sleeping."""

    response: httpx.Response
    op: Operation
    comments: list[str] = field(default_factory=list)
    lines: Any = None

    def next(self, deadline: float) -> Message | None:
        if self.lines is None:
            self.lines = self.response.iter_lines()
        fields: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            line = next(self.lines)
            if line == "":
                if "data" in fields:
                    data = json.loads("\n".join(fields["data"]))
                    problems = conformance_problems(self.op, data)
                    assert not problems, f"{self.op.key} message does not match the document: {problems}"
                    return Message(fields.get("id", [None])[-1], fields.get("event", [None])[-1], data)
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        return None

    def until(self, done: Callable[[Message], bool], seconds: float = 15.0) -> list[Message]:
        """Messages up to and including the first for which ``done(message)`` is true."""
        deadline = time.monotonic() + seconds
        out: list[Message] = []
        while True:
            message = self.next(deadline)
            assert message is not None, f"gave up after {seconds}s; received {[m.data.get('type') for m in out]}"
            out.append(message)
            if done(message):
                return out
