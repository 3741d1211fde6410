"""``workloom tail``: following the event stream across dropped connections, and filtering by queue."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import httpx
import pytest

from workloom.cli import tail
from workloom.client import AuthenticationError, Client, TransportError

EVENT = '{"sequence": %d, "type": "task.created", "task_id": "task_%d", "payload": {}}'


def _message(sequence: int) -> bytes:
    return (b"id: %d\nevent: task.created\ndata: " % sequence) + (EVENT % (sequence, sequence)).encode() + b"\n\n"


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    """As the command makes it: the SDK does not reconnect by itself, so that follow() can say so."""
    return Client("http://wl.test", "wl_k", max_retries=0, transport=httpx.MockTransport(handler))


def test_follow_resumes_after_the_last_event(capsys: pytest.CaptureFixture[str]) -> None:
    requests: list[httpx.Request] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, content=b": connected\nid: 0\n\n" + _message(1) + _message(2))
        if len(requests) == 2:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if len(requests) == 3:
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        return httpx.Response(200, content=b": connected\nid: 2\n\n" + _message(3))

    with _client(handler) as client:
        events = list(islice(tail.follow(client, types=["task.created"], sleep=waits.append), 3))

    assert [event.sequence for event in events] == [1, 2, 3]
    assert dict(requests[0].url.params) == {"types": "task.created"}
    assert dict(requests[-1].url.params) == {"types": "task.created", "after": "2"}
    assert waits == [0.5, 1.0, 2.0]  # backing off while the server is away
    err = capsys.readouterr().err
    assert "the server closed the stream" in err
    assert "connection refused" in err
    assert "HTTP 503" in err
    assert "resuming after event 2" in err
    assert "Reconnected." in err


def test_a_drop_before_any_event_resumes_from_where_the_stream_started() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, content=b": connected\nid: 41\n\n")
        return httpx.Response(200, content=_message(42))

    with _client(handler) as client:
        event = next(tail.follow(client, sleep=lambda seconds: None))
    assert event.sequence == 42
    assert "after" not in requests[0].url.params
    assert requests[1].url.params["after"] == "41"


def test_a_first_connection_that_fails_is_reported() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with _client(refused) as client, pytest.raises(TransportError):
        next(tail.follow(client))


def test_a_client_error_after_a_drop_is_not_retried() -> None:
    """A key revoked while tailing: retrying cannot help, so the error is reported."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, content=_message(5))
        return httpx.Response(401, json={"title": "Unauthorized", "status": 401, "detail": "bad key"})

    with _client(handler) as client:
        stream = tail.follow(client, after=4, sleep=lambda seconds: None)
        assert next(stream).sequence == 5
        with pytest.raises(AuthenticationError):
            next(stream)
    assert len(calls) == 2


def test_task_labels_and_queues_come_from_the_event_or_one_lookup_per_task() -> None:
    lookups: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        lookups.append(request.url.path)
        task_id = request.url.path.rsplit("/", 1)[-1]
        if task_id == "task_gone":
            return httpx.Response(404, json={"title": "Not found", "status": 404})
        return httpx.Response(200, json={"id": task_id, "identifier": "WL-9", "title": "t", "status": "ready",
                                         "queue": "billing"})  # fmt: skip

    with _client(handler) as client:
        cache = tail.TaskCache(client)
        created = {"task_id": "task_1", "payload": {"identifier": "WL-1", "queue": "support"}}
        assert (cache.label(created), cache.queue(created)) == ("WL-1", "support")
        assert cache.queue({"task_id": "task_1", "payload": {}}) == "support"
        assert lookups == []
        other = {"task_id": "task_9", "payload": {"from_status": "draft"}}
        assert (cache.label(other), cache.queue(other)) == ("WL-9", "billing")
        assert cache.label(other) == "WL-9"
        assert lookups == ["/v1/tasks/task_9"]
        moved = {"task_id": "task_1", "payload": {"changed": ["queue"]}}
        assert cache.queue(moved) == "billing"  # looked up again
        assert cache.label({"task_id": "task_gone", "payload": {}}) == "task_gone"
        assert cache.queue({"payload": {}}) is None
