"""The SDK's SSE streams: decoding, and reconnecting with ``Last-Event-ID`` after a dropped connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from workloom.client import AsyncClient, Client, NotFoundError, TransportError
from workloom.client._sse import SseDecoder


def message(sequence: int, kind: str = "task.updated") -> bytes:
    data = {"sequence": 100 + sequence, "task_sequence": sequence, "type": kind, "task_id": "task_1", "payload": {}}
    return f"id: {sequence}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class Dropping(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends some chunks then fails as a reset connection would."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection reset by peer")


class Stream:
    """A mock SSE server: one scripted answer per connection, recording each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def resumed_from(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.requests]


def sse(body: bytes | httpx.SyncByteStream) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    if isinstance(body, bytes):
        return httpx.Response(200, content=body, headers=headers)
    return httpx.Response(200, stream=body, headers=headers)


def scripted() -> Stream:
    return Stream(
        sse(b": connected\n\n" + message(1) + message(2)),  # the server ends the stream (e.g. it restarts)
        httpx.ConnectError("connection refused"),  # … and is not back yet
        httpx.Response(503, json={"title": "starting"}, headers={"Retry-After": "0"}),
        sse(Dropping(message(3), b"id: 4\nevent: task.upd")),  # a half-sent event, then a reset
        sse(message(4) + message(5)),
    )


def test_decoder_reads_messages_comments_and_ids() -> None:
    decoder = SseDecoder()
    lines = [": keep-alive", "", "id: 7", "event: task.created", 'data: {"sequence": 7,', 'data:  "type": "x"}', ""]
    events = [decoder.feed(line) for line in lines]
    assert events[:-1] == [None] * 6
    last = events[-1]
    assert last is not None and (last.sequence, last.type) == (7, "x")
    assert decoder.last_event_id == "7"
    decoder.feed('data: {"sequence": 8')
    decoder.reset()
    assert decoder.feed("") is None and decoder.last_event_id == "7"


def test_stream_reconnects_with_last_event_id_and_loses_nothing() -> None:
    server = scripted()
    sleeps: list[float] = []
    transport = httpx.MockTransport(server)
    with (
        Client("http://h", "k", transport=transport, sleep=sleeps.append) as wl,
        wl.stream_task("task_1", after_sequence=0) as stream,
    ):
        events = [next(stream) for _ in range(5)]
        assert stream.last_event_id == "5"
    assert [e.task_sequence for e in events] == [1, 2, 3, 4, 5]
    assert server.resumed_from == [None, "2", "2", "2", "3"]
    assert server.requests[0].url.params["after_sequence"] == "0"
    assert all(r.headers["accept"] == "text/event-stream" for r in server.requests)
    assert len(sleeps) == 4 and sleeps[2] == 0.0  # the 503's Retry-After


async def test_async_stream_reconnects_with_last_event_id_and_loses_nothing() -> None:
    server = scripted()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with (
        AsyncClient("http://h", "k", transport=httpx.MockTransport(server), sleep=sleep) as wl,
        wl.stream_events(types=["task.updated"], task_id="task_1") as stream,
    ):
        events = [await stream.__anext__() for _ in range(5)]
    assert [e.sequence for e in events] == [101, 102, 103, 104, 105]
    assert server.resumed_from == [None, "2", "2", "2", "3"]
    assert dict(server.requests[0].url.params) == {"types": "task.updated", "task_id": "task_1"}
    assert len(sleeps) == 4


def test_a_refused_stream_raises_its_typed_error_at_once() -> None:
    server = Stream(httpx.Response(404, json={"title": "Not found", "detail": "task WL-9 does not exist"}))
    with (
        Client("http://h", "k", transport=httpx.MockTransport(server), sleep=lambda _: None) as wl,
        pytest.raises(NotFoundError, match="WL-9"),
    ):
        next(wl.stream_task("WL-9"))
    assert len(server.requests) == 1


def test_a_stream_that_never_comes_back_gives_up_after_max_retries() -> None:
    server = Stream(httpx.ConnectError("connection refused"))
    sleeps: list[float] = []
    transport = httpx.MockTransport(server)
    with (
        Client("http://h", "k", max_retries=3, transport=transport, sleep=sleeps.append) as wl,
        pytest.raises(TransportError, match="connection refused"),
    ):
        next(wl.stream_events())
    assert len(server.requests) == 4 and len(sleeps) == 3


def test_a_stream_that_opens_and_closes_is_reopened_however_often() -> None:
    quiet = sse(b": connected\n\n")
    server = Stream(quiet, quiet, quiet, quiet, sse(message(1)))
    sleeps: list[float] = []
    transport = httpx.MockTransport(server)
    with Client("http://h", "k", max_retries=1, transport=transport, sleep=sleeps.append) as wl:
        stream = wl.stream_events(after=10)
        assert next(stream).task_sequence == 1
        stream.close()
    assert len(server.requests) == 5 and len(sleeps) == 4
    assert server.requests[0].url.params["after"] == "10"
    assert server.requests[0].extensions["timeout"]["read"] == 60.0  # room between keep-alives


def test_with_no_retries_a_stream_ends_with_its_connection() -> None:
    server = Stream(sse(b": connected\n\n"))
    transport = httpx.MockTransport(server)
    with (
        Client("http://h", "k", max_retries=0, transport=transport, sleep=lambda _: None) as wl,
        pytest.raises(TransportError, match="ended"),
    ):
        next(wl.stream_events())
    assert len(server.requests) == 1
