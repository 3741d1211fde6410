"""The CLI's pure helpers: problem lines, the HTTP client's error translation, and terminal formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from workloom.cli.http import Api, ApiError, ApiSettings, Unreachable, clean_params, format_problem
from workloom.cli.output import age, number, short_payload, truncate, when
from workloom.cli.sse import SseEvent
from workloom.cli.tail import event_line, json_line
from workloom.cli.tasks import list_filter, split_ids

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def test_a_validation_problem_reads_as_one_line_with_every_field() -> None:
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
    line = format_problem(422, problem)
    assert line == (
        "Invalid request (HTTP 422): 2 fields are invalid — "
        "priority: must be one of low, medium, high, urgent; title: is required"
    )
    assert "\n" not in line


def test_a_problem_without_field_errors_shows_title_and_detail() -> None:
    assert format_problem(404, {"title": "Not found", "detail": "task WL-9 not found"}) == (
        "Not found (HTTP 404): task WL-9 not found"
    )


def test_an_error_that_is_not_problem_json_falls_back_to_the_reason_and_body() -> None:
    assert (
        format_problem(502, {}, "<html>\n  Bad   gateway\n</html>")
        == "Bad Gateway (HTTP 502): <html> Bad gateway </html>"
    )
    assert format_problem(500, {}) == "Internal Server Error (HTTP 500)"


def test_settings_come_from_the_environment_with_a_local_default() -> None:
    assert ApiSettings.from_env({}) == ApiSettings("http://127.0.0.1:8000", None)
    env = {"WORKLOOM_URL": "https://wl.example/", "WORKLOOM_API_KEY": "wl_x"}
    assert ApiSettings.from_env(env) == ApiSettings("https://wl.example", "wl_x")


def _api(handler: httpx.MockTransport) -> Api:
    return Api(ApiSettings("http://wl.test", "wl_secret"), transport=handler)


def test_the_client_sends_the_key_and_drops_unset_params() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": []})

    with _api(httpx.MockTransport(handler)) as api:
        assert api.get("/v1/tasks", {"status": "ready", "q": None}) == {"items": []}
    assert seen[0].headers["authorization"] == "Bearer wl_secret"
    assert dict(seen[0].url.params) == {"status": "ready"}
    assert clean_params({"a": None, "b": 0}) == {"b": 0}


def test_an_error_status_becomes_an_api_error_carrying_the_problem() -> None:
    problem = {"title": "Conflict", "detail": "task WL-1 is completed", "status": 409}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=problem, headers={"content-type": "application/problem+json"})

    with _api(httpx.MockTransport(handler)) as api, pytest.raises(ApiError) as raised:
        api.post("/v1/tasks/WL-1/cancel", {})
    assert raised.value.status == 409
    assert raised.value.problem == problem
    assert str(raised.value) == "Conflict (HTTP 409): task WL-1 is completed"


def test_a_refused_connection_becomes_unreachable_naming_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with _api(httpx.MockTransport(handler)) as api, pytest.raises(Unreachable) as raised:
        api.get("/v1/queues")
    assert raised.value.url == "http://wl.test"
    assert raised.value.reason == "connection refused"


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
    assert list_filter("status", "ready,blocked") == {"status__in": "ready,blocked"}
    assert list_filter("status", None) == {}


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


def test_json_lines_are_compact_and_survive_data_that_is_not_json() -> None:
    assert json_line(SseEvent("task.created", '{\n "sequence": 3\n}', "3")) == '{"sequence":3}'
    assert json_line(SseEvent("message", "not\njson")) == "not json"
