"""The SDK's models, request encoding and configuration, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from workloom.client import Actor, AsyncClient, Claim, Client, Event, Page, Task, TaskTree, WorkloomError
from workloom.client import _calls as calls
from workloom.client._config import Settings
from workloom.client._retry import RetryPolicy

TASK = {
    "id": "task_1", "identifier": "WL-1", "title": "T", "status": "ready", "priority": "high",
    "created_at": "2030-01-01T09:00:00Z", "due_at": None, "owner": {"kind": "human", "ref": "ada"},
    "depends_on": ["task_0"], "data": {"n": 1},
}  # fmt: skip
RUN = {"id": "run_1", "task_id": "task_1", "attempt": 1, "status": "claimed", "lease_until": "2030-01-01T09:05:00Z"}


def test_models_parse_datetimes_and_nested_resources() -> None:
    task = Task.model_validate(TASK)
    assert task.created_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert task.owner == Actor(kind="human", ref="ada") and task.depends_on == ["task_0"]
    claim = Claim.model_validate({"task": TASK, "run": RUN, "claim_token": "clm", "lease_until": RUN["lease_until"]})
    assert claim.run.lease_until == claim.lease_until == datetime(2030, 1, 1, 9, 5, tzinfo=UTC)
    tree = TaskTree.model_validate({"task": TASK, "children": [{"task": {**TASK, "id": "task_2"}, "children": []}]})
    assert tree.children[0].task.id == "task_2" and tree.children[0].children == []
    page = Page[Task].model_validate({"items": [TASK], "next_cursor": "abc"})
    assert page.items == [task] and page.next_cursor == "abc" and page.total is None


def test_fields_a_newer_server_adds_are_kept_not_refused() -> None:
    task = Task.model_validate({**TASK, "status": "escalated", "sla": {"hours": 4}})
    assert task.status == "escalated"
    assert task.model_extra == {"sla": {"hours": 4}} and task.model_dump()["sla"] == {"hours": 4}
    event = Event.model_validate({"sequence": 3, "type": "task.sla_breached", "shard": 2})
    assert event.model_extra == {"shard": 2} and event.payload == {}


def test_query_values_are_encoded_the_way_the_server_reads_them() -> None:
    when = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))
    call = calls.list_tasks(
        {"status__in": ["ready", "blocked"], "created_at__gte": when, "q": "inv", "sort": ["-priority", "title"]},
        limit=10,
        cursor=None,
        count=True,
    )
    assert call.params == {
        "status__in": "ready,blocked",
        "created_at__gte": "2030-01-01T09:00:00+02:00",
        "q": "inv",
        "sort": "-priority,title",
        "limit": "10",
        "count": "true",
    }
    assert calls.list_tasks({}, None, None, False).params == {}
    assert calls.get_timeline("WL-1", 0, None).params == {}
    assert calls.get_timeline("WL-1", 4, 2).params == {"after_sequence": "4", "limit": "2"}


def test_path_parts_are_percent_encoded() -> None:
    assert calls.get_queue("team/inbox one").path == "/v1/queues/team%2Finbox%20one"
    assert calls.remove_dependency("WL-1", "WL-2").path == "/v1/tasks/WL-1/dependencies/WL-2"


def test_bodies_send_only_what_was_given() -> None:
    due = datetime(2030, 1, 1, tzinfo=UTC)
    created = calls.create_task("T", {"queue": "q", "due_at": due, "owner": Actor(kind="human", ref="ada"),
                                      "depends_on": ("a", "b")}, None)  # fmt: skip
    assert created.json == {"title": "T", "queue": "q", "due_at": "2030-01-01T00:00:00Z",
                            "owner": {"kind": "human", "ref": "ada"}, "depends_on": ["a", "b"]}  # fmt: skip
    patched = calls.update_task("WL-1", {"description": None, "owner": {"kind": "pool", "ref": "ops"}})
    assert patched.method == "PATCH" and patched.json == {"description": None, "owner": {"kind": "pool", "ref": "ops"}}
    assert calls.transition("WL-1", "publish", None).json is None
    assert calls.transition("WL-1", "cancel", None, reason="late").json == {"reason": "late"}
    claim = calls.claim("q", Actor(kind="agent_session", ref="s1"), 3, 60, 0, None)
    assert claim.json == {"worker": {"kind": "agent_session", "ref": "s1"}, "limit": 3, "lease_seconds": 60}
    assert calls.run_action("r", "fail", None, claim_token="c", error="e", retryable=False).json == {
        "claim_token": "c", "error": "e", "retryable": False,
    }  # fmt: skip


def test_an_unexpected_answer_is_a_workloom_error() -> None:
    call = calls.get_task("WL-1")
    with pytest.raises(WorkloomError, match="unexpected answer to GET /v1/tasks/WL-1"):
        call.result(httpx.Response(200, json={"no": "task"}))
    with pytest.raises(WorkloomError, match="unexpected answer"):
        call.result(httpx.Response(200, text="<html>"))


def test_a_batch_answer_is_read_whole_keeping_what_this_sdk_does_not_know_yet() -> None:
    # A worker's batch answer is parsed and validated from its bytes in one pass: every item, with any
    # field a newer server adds kept on the model, and a wrong item refused as an unexpected answer.
    task = {"id": "task_1", "title": "T", "status": "in_progress", "data": {"big": 2**64, "x": [1.5, None]},
            "created_at": "2026-12-06T12:00:00Z", "new_field": {"a": 1}}  # fmt: skip
    run = {"id": "run_1", "task_id": "task_1", "attempt": 1, "status": "claimed"}
    claim = {"task": task, "run": run, "claim_token": "ct", "lease_until": "2026-12-06T12:05:00+00:00"}
    answer = {"items": [{"run_id": "run_0", "status": "completed"}], "claims": [claim], "next": "ignored"}
    call = calls.complete_runs_and_claim([("run_0", "t0")], "q", {"kind": "automation", "ref": "w"}, 10, None, None)

    outcomes, claims = call.result(httpx.Response(200, json=answer))

    assert [(o.run_id, o.ok) for o in outcomes] == [("run_0", True)]
    (got,) = claims
    assert (got.task.data, got.run.status, got.claim_token) == ({"big": 2**64, "x": [1.5, None]}, "claimed", "ct")
    assert got.lease_until == datetime(2026, 12, 6, 12, 5, tzinfo=UTC)
    assert got.task.model_extra == {"new_field": {"a": 1}}
    wrong = {**answer, "claims": [{**claim, "claim_token": None}]}
    with pytest.raises(WorkloomError, match="unexpected answer to POST /v1/runs/complete"):
        call.result(httpx.Response(200, json=wrong))
    with pytest.raises(WorkloomError, match="unexpected answer"):
        calls.claim("q", {"kind": "automation", "ref": "w"}, 1, None, 0, None).result(httpx.Response(200, json={}))


def test_settings_come_from_arguments_then_the_environment() -> None:
    policy = RetryPolicy()
    env = {"WORKLOOM_URL": "https://wl.example.com/", "WORKLOOM_API_KEY": "wl_env"}
    from_env = Settings.resolve(None, None, 30.0, policy, env=env)
    assert (from_env.base_url, from_env.api_key) == ("https://wl.example.com", "wl_env")
    assert from_env.headers(None)["Authorization"] == "Bearer wl_env"
    given = Settings.resolve("http://other:9000", "wl_arg", 5.0, policy, env=env)
    assert (given.base_url, given.api_key, given.timeout.read) == ("http://other:9000", "wl_arg", 5.0)
    default = Settings.resolve(None, None, 30.0, policy, env={})
    assert (default.base_url, default.api_key) == ("http://127.0.0.1:8000", None)
    assert "Authorization" not in default.headers(None)
    assert default.headers({"X-Trace": "1"})["X-Trace"] == "1"


def test_clients_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKLOOM_URL", "http://env-host:1234")
    monkeypatch.setenv("WORKLOOM_API_KEY", "wl_from_env")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with Client(transport=httpx.MockTransport(handler)) as wl:
        assert wl.list_queues() == []
    assert str(seen[0].url) == "http://env-host:1234/v1/queues"
    assert seen[0].headers["authorization"] == "Bearer wl_from_env"
    assert seen[0].headers["user-agent"].startswith("workloom-python")
    with pytest.raises(ValueError, match="max_retries"):
        AsyncClient(max_retries=-1)


def test_claims_name_the_default_worker_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"claims": []})

    with Client("http://h", "k", transport=httpx.MockTransport(handler)) as wl:
        wl.claim("q")
        wl.claim("q", worker=Actor(kind="agent_session", ref="s1"))
    with Client("http://h", "k", worker={"kind": "pool", "ref": "p"}, transport=httpx.MockTransport(handler)) as wl:
        wl.claim("q")
    default, named, configured = (b["worker"] for b in bodies)
    assert isinstance(default, dict) and default["kind"] == "automation" and ":" in default["ref"]
    assert named == {"kind": "agent_session", "ref": "s1"} and configured == {"kind": "pool", "ref": "p"}
