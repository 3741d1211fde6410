"""Reading server-sent events, and following the event stream across dropped connections."""

from __future__ import annotations

from itertools import islice

import httpx
import pytest

from workloom.cli import tail
from workloom.cli.http import Api, ApiError, ApiSettings, Unreachable
from workloom.cli.sse import SseEvent, SseParser


def feed_all(parser: SseParser, text: str) -> list[SseEvent]:
    return [event for line in text.split("\n") if (event := parser.feed(line)) is not None]


def test_an_event_is_dispatched_by_the_blank_line_after_it() -> None:
    parser = SseParser()
    events = feed_all(parser, 'id: 7\nevent: task.created\ndata: {"sequence": 7}\n\n')
    assert events == [SseEvent("task.created", '{"sequence": 7}', "7")]
    assert events[0].json() == {"sequence": 7}
    assert parser.last_event_id == "7"


def test_comments_are_keepalives_and_produce_nothing() -> None:
    parser = SseParser()
    assert feed_all(parser, ": connected\n\n: keep-alive\n\n") == []
    assert parser.last_event_id is None


def test_data_lines_join_and_the_type_defaults_to_message() -> None:
    parser = SseParser()
    assert feed_all(parser, "data: one\ndata:two\ndata\n\n") == [SseEvent("message", "one\ntwo\n")]


def test_only_one_leading_space_is_stripped_and_crlf_is_accepted() -> None:
    parser = SseParser()
    assert parser.feed("data:  spaced\r\n") is None
    assert parser.feed("\r\n") == SseEvent("message", " spaced")


def test_an_event_without_data_is_not_dispatched_but_its_id_counts() -> None:
    parser = SseParser()
    assert feed_all(parser, "id: 9\nevent: ping\n\n") == []
    assert parser.last_event_id == "9"
    assert feed_all(parser, "data: x\n\n") == [SseEvent("message", "x", "9")]


def test_retry_is_remembered_and_unknown_fields_ignored() -> None:
    parser = SseParser()
    assert feed_all(parser, "retry: 2500\nretry: soon\nfoo: bar\n\n") == []
    assert parser.retry_ms == 2500


def test_a_partial_event_is_forgotten_after_a_drop_but_the_id_is_kept() -> None:
    parser = SseParser(last_event_id="4")
    parser.feed("event: task.ready")
    parser.feed("data: half")
    parser.reset_partial()
    assert feed_all(parser, "data: whole\n\n") == [SseEvent("message", "whole", "4")]


def _message(sequence: int) -> bytes:
    return b'id: %d\nevent: task.created\ndata: {"sequence": %d}\n\n' % (sequence, sequence)


def test_follow_resumes_after_the_last_event_with_last_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workloom.cli.tail.time.sleep", lambda seconds: None)
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, content=b": connected\n\n" + _message(1) + _message(2))
        if len(requests) == 2:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if len(requests) == 3:
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        return httpx.Response(200, content=_message(3))

    api = Api(ApiSettings("http://wl.test", "wl_k"), transport=httpx.MockTransport(handler))
    events = list(islice(tail.follow(api, {"types": "task.created", "task_id": None}), 3))

    assert [event.id for event in events] == ["1", "2", "3"]
    assert "last-event-id" not in requests[0].headers
    assert dict(requests[0].url.params) == {"types": "task.created"}
    assert requests[-1].headers["last-event-id"] == "2"
    assert dict(requests[-1].url.params) == {"types": "task.created", "after": "2"}


def test_follow_reports_a_first_connection_that_fails() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    api = Api(ApiSettings("http://wl.test", "wl_k"), transport=httpx.MockTransport(refused))
    with pytest.raises(Unreachable):
        next(tail.follow(api, {}))


def test_follow_gives_up_on_a_client_error_after_a_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key revoked while tailing: retrying cannot help, so the error is reported."""
    monkeypatch.setattr("workloom.cli.tail.time.sleep", lambda seconds: None)
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, content=_message(5))
        return httpx.Response(401, json={"title": "Unauthorized", "status": 401, "detail": "bad key"})

    api = Api(ApiSettings("http://wl.test", "wl_k"), transport=httpx.MockTransport(handler))
    stream = tail.follow(api, {}, after=4)
    assert next(stream).id == "5"
    with pytest.raises(ApiError) as raised:
        next(stream)
    assert raised.value.status == 401
    assert len(calls) == 2
