"""The CLI's pure helpers: SDK errors as one line with the fix, and terminal formatting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import typer

from workloom.cli import http
from workloom.cli.output import age, number, short_payload, truncate, when
from workloom.cli.tail import event_line, json_line
from workloom.cli.tasks import list_filter, owner_filters, split_ids
from workloom.client import Client, NotFoundError, TransportError, ValidationError, WorkloomError

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://wl.test", "wl_secret", max_retries=0, transport=httpx.MockTransport(handler))


def _raised(handler: Callable[[httpx.Request], httpx.Response]) -> WorkloomError:
    with _client(handler) as client, pytest.raises(WorkloomError) as raised:
        client.list_queues()
    return raised.value


def _reported(exc: WorkloomError, capsys: pytest.CaptureFixture[str], hints: http.Hints | None = None) -> str:
    with pytest.raises(typer.Exit) as exited:
        http.report(exc, "http://wl.test", hints)
    assert exited.value.exit_code == 1
    return capsys.readouterr().err


def test_a_validation_problem_reads_as_one_line_with_every_field_and_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    problem = {
        "type": "https://workloom.dev/problems/validation-error",
        "title": "Invalid request",
        "status": 422,
        "detail": "2 fields are invalid",
        "errors": [
            {"field": "priority", "message": "must be one of low, medium, high, urgent"},
            {"field": "title", "message": "is required"},
        ],
    }
    exc = _raised(lambda request: httpx.Response(422, json=problem))
    assert isinstance(exc, ValidationError)
    line = http.error_message(exc)
    assert line == (
        "Invalid request (HTTP 422): 2 fields are invalid — "
        "priority: must be one of low, medium, high, urgent; title: is required"
    )
    err = _reported(exc, capsys)
    assert err.splitlines()[0] == line
    assert "Fix the fields" in err


def test_an_error_that_is_not_problem_json_falls_back_to_the_reason_and_body() -> None:
    exc = _raised(lambda request: httpx.Response(502, text="<html>\n  Bad   gateway\n</html>"))
    assert http.error_message(exc) == "Bad Gateway (HTTP 502): <html> Bad gateway </html>"


def test_the_hint_names_what_to_do_for_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    unauthorized = _raised(lambda request: httpx.Response(401, json={"title": "Unauthorized", "status": 401}))
    assert "WORKLOOM_API_KEY" in _reported(unauthorized, capsys)
    missing = NotFoundError(status=404, title="Not found", detail="task WL-9 not found")
    assert "workloom tasks list" in _reported(missing, capsys)
    assert "look elsewhere" in _reported(missing, capsys, hints={NotFoundError: "look elsewhere"})


def test_the_client_sends_the_key_and_the_filters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with _client(handler) as client:
        client.list_tasks(status__in=["ready", "blocked"], queue="docs")
    assert seen[0].headers["authorization"] == "Bearer wl_secret"
    assert dict(seen[0].url.params) == {"status__in": "ready,blocked", "queue": "docs"}


def test_a_refused_connection_says_the_server_is_not_reachable_and_how_to_start_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    exc = _raised(handler)
    assert isinstance(exc, TransportError)
    assert http.unreachable_reason(exc) == "connection refused"
    err = _reported(exc, capsys)
    assert "isn't reachable at http://wl.test (connection refused)" in err
    assert "workloom serve" in err


def test_connect_without_a_key_says_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORKLOOM_API_KEY", raising=False)
    with pytest.raises(typer.Exit), http.connect():
        pass
    err = capsys.readouterr().err
    assert "WORKLOOM_API_KEY is not set" in err
    assert "workloom keys create" in err


def test_the_server_url_comes_from_the_environment_with_a_local_default() -> None:
    assert http.server_url({}) == "http://127.0.0.1:8000"
    assert http.server_url({"WORKLOOM_URL": "https://wl.example/"}) == "https://wl.example"


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, "0s"), (59, "59s"), (60, "1m"), (3_599, "59m"), (7_200, "2h"), (200_000, "2d")]
)
def test_age_uses_the_largest_whole_unit(seconds: int, expected: str) -> None:
    assert age((NOW - timedelta(seconds=seconds)).isoformat(), NOW) == expected


def test_age_of_nothing_or_garbage_is_blank_and_the_future_is_now() -> None:
    assert age(None, NOW) == ""
    assert age("yesterday", NOW) == ""
    assert age((NOW + timedelta(minutes=5)).isoformat(), NOW) == "0s"


def test_when_shows_the_time_alone_for_today() -> None:
    assert len(when(NOW.isoformat(), NOW)) == len("12:00:00")
    assert len(when((NOW - timedelta(days=3)).isoformat(), NOW)) == len("2025-12-30 12:00")


def test_short_payload_skips_empty_values_and_is_cut_to_width() -> None:
    payload: dict[str, Any] = {"title": "Write it", "queue": None, "depends_on": [], "draft": False, "data": {"a": 1}}
    assert short_payload(payload) == 'title=Write it draft=false data={"a":1}'
    assert short_payload({"title": "x" * 200}, 20) == "title=" + "x" * 13 + "…"
    assert short_payload(None) == ""
    assert truncate("abc", 3) == "abc"


def test_numbers_drop_a_needless_decimal() -> None:
    assert (number(300.0), number(1.5), number(3), number(None)) == ("300", "1.5", "3", "?")


def test_list_options_accept_repeats_and_commas() -> None:
    assert split_ids(["WL-1", "WL-2, WL-3", ""]) == ["WL-1", "WL-2", "WL-3"]
    assert split_ids(None) == []
    assert list_filter("status", "ready") == {"status": "ready"}
    assert list_filter("status", "ready, blocked") == {"status__in": ["ready", "blocked"]}
    assert list_filter("status", None) == {}
    assert owner_filters("human:alice") == {"owner_kind": "human", "owner_ref": "alice"}
    assert owner_filters("alice,bob") == {"owner_ref__in": ["alice", "bob"]}
    assert owner_filters(None) == {}


def test_an_event_line_names_type_task_actor_and_payload() -> None:
    event = {
        "type": "task.created",
        "task_id": "task_1",
        "actor": {"kind": "human", "ref": "alice"},
        "payload": {"title": "Write it", "queue": "docs"},
        "created_at": NOW.isoformat(),
    }
    text = event_line(event, "WL-7").plain
    assert "task.created" in text
    assert "WL-7" in text
    assert "human:alice" in text
    assert text.endswith("title=Write it queue=docs")
    assert "\n" not in text


def test_json_lines_are_compact_single_lines() -> None:
    assert json_line({"sequence": 3, "payload": {"title": "a\nb"}}) == '{"sequence":3,"payload":{"title":"a\\nb"}}'
