"""Malformed requests are refused with a problem+json that names what to fix, and change nothing.

One server per database runs every case in turn (a table of requests); all mismatches are collected and
reported together, then the database is compared with a snapshot taken before the first case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

import httpx

WORKER = {"kind": "automation", "ref": "validator"}
PROBLEMS = "https://workloom.dev/problems/"
BODY_STATUSES = (400, 413, 415, 422)  # refusals of the request itself: these carry an ``errors`` list


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # may name {task}, {run}, {token}
    status: int
    field: str | None = None  # a field the ``errors`` list must name
    json: Any = None
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = default(default_factory=dict)
    params: dict[str, str] | None = None
    kind: str | None = None  # the expected problem type, after the common prefix


def body(method: str, path: str, json: Any, field: str | None, name: str, status: int = 422) -> Case:
    return Case(name, method, path, status, field, json=json, kind="validation-error" if status == 422 else None)


def query(path: str, params: dict[str, str], field: str, name: str) -> Case:
    return Case(name, "GET", path, 422, field, params=params, kind="validation-error")


def missing(method: str, path: str, name: str, json: Any = None) -> Case:
    return Case(name, method, path, 404, json=json, kind="not-found")


def oversize_chunks() -> Iterator[bytes]:
    yield b'{"title": "chunked", "data": "'
    for _ in range(20):
        yield b"x" * 65_536
    yield b'"}'


T = "/v1/tasks"
Q = "/v1/queues"
R = "/v1/runs/{run}"
NAIVE = "2030-01-01T09:00:00"
JSON = {"Content-Type": "application/json"}

CASES: list[Case] = [
    # -- POST /v1/tasks: fields ------------------------------------------------------------------------------
    body("POST", T, {}, "title", "task without title"),
    body("POST", T, {"title": "x", "colour": "red"}, "colour", "task with an unknown field"),
    body("POST", T, {"title": 123}, "title", "title as a number"),
    body("POST", T, {"title": ""}, "title", "empty title"),
    body("POST", T, {"title": "x" * 501}, "title", "title too long"),
    body("POST", T, {"title": "x", "description": 7}, "description", "description as a number"),
    body("POST", T, {"title": "x", "priority": "critical"}, "priority", "unknown priority"),
    body("POST", T, {"title": "x", "priority": 3}, "priority", "priority as a number"),
    body("POST", T, {"title": "x", "approval_policy": "maybe"}, "approval_policy", "unknown approval_policy"),
    body("POST", T, {"title": "x", "max_attempts": "3"}, "max_attempts", "max_attempts as a string"),
    body("POST", T, {"title": "x", "max_attempts": 0}, "max_attempts", "max_attempts 0"),
    body("POST", T, {"title": "x", "draft": "true"}, "draft", "draft as a string"),
    body("POST", T, {"title": "x", "metadata": [1, 2]}, "metadata", "metadata as a list"),
    body("POST", T, {"title": "x", "owner": "alice"}, "owner", "owner as a string"),
    body("POST", T, {"title": "x", "owner": {"kind": "robot", "ref": "r2"}}, "owner.kind", "unknown owner.kind"),
    body("POST", T, {"title": "x", "depends_on": "WL-1"}, "depends_on", "depends_on as a string"),
    body("POST", T, {"title": "x", "depends_on": ["task_nope"]}, "depends_on", "depends_on an unknown task"),
    body("POST", T, {"title": "x", "parent_task_id": "WL-999"}, "parent_task_id", "unknown parent"),
    body("POST", T, {"title": "x", "due_at": NAIVE}, "due_at", "due_at without a timezone"),
    body("POST", T, {"title": "x", "due_at": "tomorrow"}, "due_at", "due_at not a date"),
    body("POST", T, {"title": "x", "queue": "has space"}, "queue", "queue name with a space"),
    body("POST", T, {"title": "x", "queue": 5}, "queue", "queue name as a number"),
    # -- request bodies that are not JSON objects --------------------------------------------------------------
    Case("malformed JSON", "POST", T, 400, "body", content=b'{"title": ', headers=JSON),
    Case("JSON array body", "POST", T, 422, "body", content=b"[1, 2]", headers=JSON, kind="validation-error"),
    Case("JSON string body", "POST", T, 422, "body", content=b'"hello"', headers=JSON, kind="validation-error"),
    Case("empty JSON body", "POST", T, 422, "body", content=b"", headers=JSON, kind="validation-error"),
    Case(
        "text/plain body",
        "POST",
        T,
        415,
        "Content-Type",
        content=b'{"title": "x"}',
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "form body",
        "POST",
        T,
        415,
        "Content-Type",
        content=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case("body over 1 MiB", "POST", T, 413, "body", json={"title": "big", "data": "x" * 1_100_000}),
    Case("chunked body over 1 MiB", "POST", T, 413, "body", content=oversize_chunks, headers=JSON),
    Case(
        "Idempotency-Key too long",
        "POST",
        T,
        422,
        "Idempotency-Key",
        json={"title": "x"},
        headers={"Idempotency-Key": "k" * 300},
        kind="validation-error",
    ),
    Case(
        "empty Idempotency-Key",
        "POST",
        T,
        422,
        "Idempotency-Key",
        json={"title": "x"},
        headers={"Idempotency-Key": ""},
        kind="validation-error",
    ),
    # -- queues ------------------------------------------------------------------------------------------------
    body("POST", Q, {}, "name", "queue without name"),
    body("POST", Q, {"name": "bad name!"}, "name", "queue name with punctuation"),
    body("POST", Q, {"name": "q2", "lease_seconds": 0}, "lease_seconds", "queue lease_seconds 0"),
    body("POST", Q, {"name": "q2", "lease_seconds": "30"}, "lease_seconds", "queue lease_seconds as a string"),
    body("POST", Q, {"name": "q2", "start_mode": "sometimes"}, "start_mode", "unknown start_mode"),
    body("POST", Q, {"name": "q2", "max_attempts": 0}, "max_attempts", "queue max_attempts 0"),
    body("POST", Q, {"name": "q2", "backoff_coefficient": 0.5}, "backoff_coefficient", "backoff below 1"),
    body("POST", Q, {"name": "q2", "rate": 5}, "rate", "queue with an unknown field"),
    body("PATCH", f"{Q}/work", {"colour": "red"}, "colour", "queue patch with an unknown field"),
    body("PATCH", f"{Q}/work", {"max_interval_seconds": -1}, "max_interval_seconds", "negative max interval"),
    body("PATCH", f"{Q}/work", [{"lease_seconds": 5}], "body", "queue patch as a list"),
    # -- claims ------------------------------------------------------------------------------------------------
    body("POST", f"{Q}/work/claim", {}, "worker", "claim without worker"),
    body("POST", f"{Q}/work/claim", {"worker": []}, "worker", "worker as a list"),
    body("POST", f"{Q}/work/claim", {"worker": {"kind": "robot", "ref": "r"}}, "worker.kind", "unknown worker.kind"),
    body("POST", f"{Q}/work/claim", {"worker": {"kind": "automation"}}, "worker.ref", "worker without ref"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "limit": 0}, "limit", "claim limit 0"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "limit": 101}, "limit", "claim limit 101"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "limit": "1"}, "limit", "claim limit as a string"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "lease_seconds": 0}, "lease_seconds", "claim lease 0"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "wait_seconds": 31}, "wait_seconds", "wait_seconds 31"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "wait_seconds": "5"}, "wait_seconds", "wait as a string"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "queue": "work"}, "queue", "claim with an unknown field"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "start": "yes"}, "start", "claim start as a string"),
    body("POST", f"{Q}/work/claim", {"worker": WORKER, "start": None}, "start", "claim start null"),
    body("POST", "/v1/claims/next", {"worker": WORKER, "start": 1}, "start", "claim-next start as a number"),
    body(
        "POST",
        f"{R}/complete",
        {"claim_token": "{token}", "claim_next": {"start": "true"}},
        "claim_next.start",
        "completion's claim_next start as a string",
    ),
    # -- runs --------------------------------------------------------------------------------------------------
    body("POST", f"{R}/complete", {}, "claim_token", "complete without claim_token"),
    body("POST", f"{R}/start", {"claim_token": 123}, "claim_token", "claim_token as a number"),
    body("POST", f"{R}/fail", {"claim_token": "{token}"}, "error", "fail without error"),
    body("POST", f"{R}/fail", {"claim_token": "{token}", "error": ""}, "error", "fail with an empty error"),
    body(
        "POST",
        f"{R}/fail",
        {"claim_token": "{token}", "error": "e", "retryable": "false"},
        "retryable",
        "retryable as a string",
    ),
    body(
        "POST", f"{R}/heartbeat", {"claim_token": "{token}", "extend_seconds": 0}, "extend_seconds", "extend_seconds 0"
    ),
    body(
        "POST",
        f"{R}/heartbeat",
        {"claim_token": "{token}", "extend_seconds": 1.5},
        "extend_seconds",
        "extend_seconds fractional",
    ),
    body("POST", f"{R}/heartbeat", {"claim_token": "{token}", "usage": [1]}, "usage", "usage as a list"),
    body("POST", f"{R}/release", {"claim_token": "{token}", "reason": 5}, "reason", "release reason as a number"),
    body("POST", f"{R}/complete", {"claim_token": "{token}", "outcome": 1}, "outcome", "complete, unknown field"),
    Case(
        "complete with a wrong token",
        "POST",
        f"{R}/complete",
        409,
        json={"claim_token": "clm_not_it"},
        kind="stale-claim",
    ),
    # -- task transitions --------------------------------------------------------------------------------------
    body("PATCH", f"{T}/{{task}}", {"priority": "critical"}, "priority", "patch with an unknown priority"),
    body("PATCH", f"{T}/{{task}}", {"status": "completed"}, "status", "patch of a field that is not settable"),
    body("PATCH", f"{T}/{{task}}", {"due_at": NAIVE}, "due_at", "patch with a naive due_at"),
    body("POST", f"{T}/{{task}}/dependencies", {}, "depends_on", "dependencies without depends_on"),
    body("POST", f"{T}/{{task}}/dependencies", {"depends_on": []}, "depends_on", "empty depends_on"),
    body("POST", f"{T}/{{task}}/dependencies", {"depends_on": "WL-1"}, "depends_on", "depends_on not a list"),
    body("POST", f"{T}/{{task}}/cancel", {"reason": 5}, "reason", "cancel reason as a number"),
    body("POST", f"{T}/{{task}}/approve", {"comment": ["ok"]}, "comment", "approve comment as a list"),
    body("POST", f"{T}/{{task}}/children", {}, "title", "child without title"),
    # -- listing -----------------------------------------------------------------------------------------------
    query(T, {"status": "bogus"}, "status", "unknown status filter"),
    query(T, {"status__in": "ready,bogus"}, "status__in", "unknown status in a list"),
    query(T, {"priority": "critical"}, "priority", "unknown priority filter"),
    query(T, {"colour": "red"}, "colour", "unknown filter"),
    query(T, {"status__gte": "ready"}, "status__gte", "unsupported filter operator"),
    query(T, {"created_at__gte": "yesterday"}, "created_at__gte", "created_at__gte not a date"),
    query(T, {"sort": "colour"}, "sort", "unknown sort field"),
    query(T, {"sort": "-priority,colour"}, "sort", "unknown second sort field"),
    query(T, {"limit": "0"}, "limit", "list limit 0"),
    query(T, {"limit": "501"}, "limit", "list limit 501"),
    query(T, {"limit": "ten"}, "limit", "list limit not a number"),
    query(T, {"cursor": "!!not-a-cursor!!"}, "cursor", "garbage cursor"),
    query(T, {"cursor": "WzFd"}, "cursor", "cursor of another sort"),
    query(T, {"count": "maybe"}, "count", "count not a boolean"),
    query(f"{T}/{{task}}/timeline", {"after_sequence": "-1"}, "after_sequence", "negative after_sequence"),
    query(f"{T}/{{task}}/timeline", {"after_sequence": "abc"}, "after_sequence", "after_sequence not a number"),
    # -- streams -----------------------------------------------------------------------------------------------
    Case(
        "task stream, garbage Last-Event-ID",
        "GET",
        f"{T}/{{task}}/stream",
        422,
        "Last-Event-ID",
        headers={"Last-Event-ID": "abc"},
        kind="validation-error",
    ),
    Case(
        "events stream, negative Last-Event-ID",
        "GET",
        "/v1/events/stream",
        422,
        "Last-Event-ID",
        headers={"Last-Event-ID": "-5"},
        kind="validation-error",
    ),
    query("/v1/events/stream", {"after": "-1"}, "after", "events stream, negative after"),
    query(f"{T}/{{task}}/stream", {"after_sequence": "x"}, "after_sequence", "task stream, after_sequence text"),
    # -- unknown ids -------------------------------------------------------------------------------------------
    missing("GET", f"{T}/task_doesnotexist", "unknown task"),
    missing("GET", f"{T}/WL-999", "unknown identifier"),
    missing("PATCH", f"{T}/task_nope", "patch unknown task", json={"title": "x"}),
    missing("DELETE", f"{T}/task_nope", "delete unknown task"),
    missing("POST", f"{T}/task_nope/cancel", "cancel unknown task"),
    missing("POST", f"{T}/task_nope/children", "child of an unknown task", json={"title": "x"}),
    missing("GET", f"{T}/task_nope/timeline", "timeline of an unknown task"),
    missing("GET", f"{T}/task_nope/runs", "runs of an unknown task"),
    missing("GET", f"{T}/task_nope/tree", "tree of an unknown task"),
    missing("GET", f"{T}/task_nope/stream", "stream of an unknown task"),
    missing("GET", "/v1/events/stream?task_id=task_nope", "events stream of an unknown task"),
    missing("DELETE", f"{T}/{{task}}/dependencies/task_nope", "remove an unknown dependency"),
    missing("GET", "/v1/runs/run_nope", "unknown run"),
    missing("POST", "/v1/runs/run_nope/complete", "complete an unknown run", json={"claim_token": "x"}),
    missing("GET", f"{Q}/nope", "unknown queue"),
    missing("PATCH", f"{Q}/nope", "patch unknown queue", json={"description": "x"}),
    missing("POST", f"{Q}/nope/claim", "claim from an unknown queue", json={"worker": WORKER}),
    Case("unknown endpoint", "GET", "/v1/widgets", 404),
    Case("method not allowed", "PUT", T, 405, json={"title": "x"}),
    # -- requests a valid body cannot rescue ------------------------------------------------------------------
    Case("queue that exists already", "POST", Q, 409, json={"name": "work"}, kind="conflict"),
    Case("publish a task that is not a draft", "POST", f"{T}/{{task}}/publish", 409),
    Case("approve a task without approval", "POST", f"{T}/{{task}}/approve", 409),
]


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def check(api: httpx.Client, case: Case, ids: dict[str, str]) -> list[str]:
    """What is wrong with the server's answer to ``case`` (nothing, if it is right)."""
    kwargs: dict[str, Any] = {"headers": case.headers, "params": case.params}
    if case.json is not None:
        kwargs["json"] = fill(case.json, ids)
    elif case.content is not None:
        kwargs["content"] = case.content() if callable(case.content) else case.content
    path = fill(case.path, ids)
    with api.stream(case.method, path, **kwargs) as response:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return [f"got {response.status_code} and an event stream, expected {case.status}"]
        response.read()
    wrong = []
    if response.status_code != case.status:
        wrong.append(f"status {response.status_code}, expected {case.status}: {response.text[:300]}")
    if not content_type.startswith("application/problem+json"):
        return [*wrong, f"content-type {content_type!r}, expected application/problem+json"]
    problem = response.json()
    if not isinstance(problem, dict):
        return [*wrong, f"problem is not an object: {problem!r}"]
    for key in ("type", "title", "status", "detail"):
        if not problem.get(key):
            wrong.append(f"problem has no {key!r}: {problem}")
    if problem.get("status") != response.status_code:
        wrong.append(f"problem status {problem.get('status')} but HTTP status {response.status_code}")
    if not str(problem.get("type", "")).startswith(PROBLEMS):
        wrong.append(f"problem type {problem.get('type')!r} is not under {PROBLEMS}")
    if case.kind is not None and problem.get("type") != PROBLEMS + case.kind:
        wrong.append(f"problem type {problem.get('type')!r}, expected {PROBLEMS + case.kind}")
    if case.status in BODY_STATUSES:
        errors = problem.get("errors")
        if not isinstance(errors, list) or not errors:
            wrong.append(f"no errors list: {problem}")
        else:
            if not all(isinstance(e, dict) and e.get("field") and e.get("message") for e in errors):
                wrong.append(f"an entry of errors lacks field or message: {errors}")
            fields = [str(e.get("field")) for e in errors if isinstance(e, dict)]
            if case.field is not None and not any(f == case.field or f.startswith(case.field + ".") for f in fields):
                wrong.append(f"errors name {fields}, not {case.field!r}")
    return wrong


def snapshot(api: httpx.Client, task_id: str, run_id: str) -> dict[str, Any]:
    """Everything a client can read about the workspace's state."""

    def get(path: str, **params: str) -> Any:
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    return {
        "tasks": get("/v1/tasks", count="true", limit="500", sort="identifier"),
        "queues": get("/v1/queues"),
        "timeline": get(f"/v1/tasks/{task_id}/timeline"),
        "runs": get(f"/v1/tasks/{task_id}/runs"),
        "run": get(f"/v1/runs/{run_id}"),
        "tree": get(f"/v1/tasks/{task_id}/tree"),
    }


def test_malformed_requests_are_refused_and_change_nothing(api: httpx.Client) -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"

    assert api.post("/v1/queues", json={"name": "work"}).status_code == 201
    task = api.post("/v1/tasks", json={"title": "Already here", "queue": "work"}).json()
    claimed = api.post("/v1/queues/work/claim", json={"worker": WORKER}).json()["claims"][0]
    assert claimed["task"]["id"] == task["id"]
    spare = api.post("/v1/tasks", json={"title": "Waiting"})
    assert spare.status_code == 201
    ids = {"task": task["id"], "run": claimed["run"]["id"], "token": claimed["claim_token"]}
    before = snapshot(api, task["id"], ids["run"])
    assert before["tasks"]["total"] == 2

    failures: dict[str, list[str]] = {}
    for case in CASES:
        try:
            wrong = check(api, case, ids)
        except httpx.HTTPError as exc:
            wrong = [f"transport error: {exc!r}"]
        if wrong:
            failures[f"{case.name}: {case.method} {case.path}"] = wrong

    after = snapshot(api, task["id"], ids["run"])
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}

    report = "\n".join(f"- {name}\n    " + "\n    ".join(msgs) for name, msgs in failures.items())
    assert not failures and not changed, (
        f"{len(failures)} of {len(CASES)} malformed requests were not refused properly:\n{report}\n"
        f"what refused requests changed in the database (before, after): {changed or 'nothing'}"
    )
