"""Workspaces are walled off: another workspace's ids are 404 everywhere and its things are never listed.

Also: every ``/v1`` endpoint wants a valid bearer key (401 without one), and an agent key cannot manage
queues (403).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from serverproc import ServerProcess

WORKER = {"kind": "automation", "ref": "worker-a"}
PROBLEMS = "https://workloom.dev/problems/"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # may name {task}, {other}, {run}, {queue}
    json: Any = None
    token: bool = False  # the body carries A's claim token

    def send(self, client: httpx.Client, ids: dict[str, str]) -> httpx.Response:
        path = self.path.format(**ids)
        body = fill(self.json, ids)
        if self.token:
            body = {**(body or {}), "claim_token": ids["token"]}
        with client.stream(self.method, path, json=body) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
            return response

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# Every endpoint of docs/api.md that names one of workspace A's things.
SCOPED = [
    Endpoint("GET", "/v1/queues/{queue}"),
    Endpoint("PATCH", "/v1/queues/{queue}", {"description": "taken over"}),
    Endpoint("POST", "/v1/queues/{queue}/claim", {"worker": WORKER}),
    Endpoint("GET", "/v1/tasks/{task}"),
    Endpoint("GET", "/v1/tasks/{identifier}"),
    Endpoint("PATCH", "/v1/tasks/{task}", {"title": "taken over"}),
    Endpoint("DELETE", "/v1/tasks/{other}"),
    Endpoint("POST", "/v1/tasks/{draft}/publish"),
    Endpoint("POST", "/v1/tasks/{gated}/approve", {"comment": "sure"}),
    Endpoint("POST", "/v1/tasks/{gated}/reject", {"reason": "no"}),
    Endpoint("POST", "/v1/tasks/{task}/cancel", {"reason": "mine now"}),
    Endpoint("POST", "/v1/tasks/{manual}/start"),
    Endpoint("GET", "/v1/tasks/{task}/children"),
    Endpoint("POST", "/v1/tasks/{task}/children", {"title": "planted"}),
    Endpoint("POST", "/v1/tasks/{other}/dependencies", {"depends_on": ["{task}"]}),
    Endpoint("DELETE", "/v1/tasks/{dependent}/dependencies/{other}"),
    Endpoint("GET", "/v1/tasks/{task}/tree"),
    Endpoint("GET", "/v1/tasks/{task}/runs"),
    Endpoint("GET", "/v1/tasks/{task}/timeline"),
    Endpoint("GET", "/v1/tasks/{task}/stream"),
    Endpoint("GET", "/v1/events/stream?task_id={task}"),
    Endpoint("GET", "/v1/runs/{run}"),
    Endpoint("POST", "/v1/runs/{run}/start", token=True),
    Endpoint("POST", "/v1/runs/{run}/heartbeat", {"extend_seconds": 5}, token=True),
    Endpoint("POST", "/v1/runs/{run}/complete", {"result": "stolen"}, token=True),
    Endpoint("POST", "/v1/runs/{run}/fail", {"error": "sabotage", "retryable": False}, token=True),
    Endpoint("POST", "/v1/runs/{run}/release", {"reason": "taken"}, token=True),
]
# Endpoints that name nothing; listed for the authentication check.
UNSCOPED = [
    Endpoint("GET", "/v1/queues"),
    Endpoint("POST", "/v1/queues", {"name": "anonymous"}),
    Endpoint("GET", "/v1/tasks"),
    Endpoint("POST", "/v1/tasks", {"title": "anonymous"}),
    Endpoint("GET", "/v1/events/stream"),
]


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, got {response.status_code}: "
        f"{response.text}"
    )
    return response.json() if response.content else None


def state_of_a(api: httpx.Client, ids: dict[str, str]) -> dict[str, Any]:
    """What workspace A can read about its own things."""
    return {
        "tasks": ok(api.get("/v1/tasks", params={"limit": 500, "sort": "identifier", "count": "true"})),
        "queues": ok(api.get("/v1/queues")),
        "timelines": {n: ok(api.get(f"/v1/tasks/{ids[n]}/timeline")) for n in ("task", "other", "gated", "manual")},
        "run": ok(api.get(f"/v1/runs/{ids['run']}")),
        "children": ok(api.get(f"/v1/tasks/{ids['task']}/children")),
    }


def setup_workspace_a(api: httpx.Client) -> dict[str, str]:
    ok(api.post("/v1/queues", json={"name": "alpha"}), 201)
    ok(api.post("/v1/queues", json={"name": "alpha-manual", "start_mode": "manual"}), 201)
    task = ok(api.post("/v1/tasks", json={"title": "Alpha secret plan", "queue": "alpha"}), 201)
    claimed = ok(api.post("/v1/queues/alpha/claim", json={"worker": WORKER}))["claims"][0]
    assert claimed["task"]["id"] == task["id"]
    other = ok(api.post("/v1/tasks", json={"title": "Alpha second", "queue": "alpha"}), 201)
    dependent = ok(api.post("/v1/tasks", json={"title": "Alpha dependent", "depends_on": [other["id"]]}), 201)
    draft = ok(api.post("/v1/tasks", json={"title": "Alpha draft", "draft": True}), 201)
    gated = ok(api.post("/v1/tasks", json={"title": "Alpha gated", "approval_policy": "required"}), 201)
    manual = ok(api.post("/v1/tasks", json={"title": "Alpha manual", "queue": "alpha-manual"}), 201)
    ok(api.post(f"/v1/tasks/{task['id']}/children", json={"title": "Alpha child"}), 201)
    return {
        "task": task["id"],
        "identifier": task["identifier"],
        "other": other["id"],
        "dependent": dependent["id"],
        "draft": draft["id"],
        "gated": gated["id"],
        "manual": manual["id"],
        "run": claimed["run"]["id"],
        "token": claimed["claim_token"],
        "queue": "alpha",
    }


def test_another_workspace_gets_404_for_everything_and_lists_nothing(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    ids = setup_workspace_a(api)
    before = state_of_a(api, ids)
    with server.client(make_key("other", "admin")) as b:
        wrong: list[str] = []
        for endpoint in SCOPED:
            response = endpoint.send(b, ids)
            if response.status_code != 404:
                wrong.append(f"{endpoint}: {response.status_code} {response.text[:200]}")
                continue
            problem = response.json()
            if problem.get("type") != PROBLEMS + "not-found" or "no such endpoint" in problem.get("detail", ""):
                wrong.append(f"{endpoint}: not the not-found problem of a resource: {problem}")
        # The batch calls on held runs answer per item: each of A's runs is not found for B
        item = {"run_id": ids["run"], "claim_token": ids["token"]}
        for batch in ("start", "heartbeat", "complete"):
            (outcome,) = ok(b.post(f"/v1/runs/{batch}", json={"runs": [item]}))["items"]
            if outcome.get("error", {}).get("type") != PROBLEMS + "not-found":
                wrong.append(f"POST /v1/runs/{batch}: {outcome}")
        assert not wrong, "workspace 'other' reached workspace 'default':\n" + "\n".join(wrong)
        assert state_of_a(api, ids) == before, "requests of another workspace changed workspace A"

        # B's lists show nothing of A's, however they are filtered
        assert ok(b.get("/v1/tasks", params={"count": "true"})) == {"items": [], "next_cursor": None, "total": 0}
        for params in (
            {"queue": "alpha"},
            {"q": "Alpha"},
            {"q": ids["identifier"]},
            {"status": "in_progress"},
            {"status__in": "draft,blocked,ready,in_progress"},
            {"parent_task_id": ids["task"]},
            {"priority": "medium"},
        ):
            assert ok(b.get("/v1/tasks", params=params))["items"] == [], params
        assert ok(b.get("/v1/queues"))["items"] == []

        # B refers to A's tasks from its own: refused, and nothing is linked
        mine = ok(b.post("/v1/tasks", json={"title": "Beta own"}), 201)
        assert mine["identifier"] == "WL-1"  # numbering is per workspace
        linked = b.post(f"/v1/tasks/{mine['id']}/dependencies", json={"depends_on": [ids["task"]]})
        assert linked.status_code in (404, 422), linked.text
        assert ok(b.get(f"/v1/tasks/{mine['id']}"))["depends_on"] == []
        assert ok(b.get(f"/v1/tasks/{mine['id']}"))["status"] == "ready"
        for refused in (
            {"title": "Beta child of A", "parent_task_id": ids["task"]},
            {"title": "Beta after A", "depends_on": [ids["other"]]},
        ):
            response = b.post("/v1/tasks", json=refused)
            assert response.status_code in (404, 422), (refused, response.text)
        assert b.get(f"/v1/tasks/{ids['identifier']}").json()["id"] == mine["id"]  # B's own WL-1

        # B's queue of the same name is B's own; claiming from it never hands out A's work
        ok(b.post("/v1/queues", json={"name": "alpha"}), 201)
        assert ok(b.post("/v1/queues/alpha/claim", json={"worker": WORKER}))["claims"] == []
        beta_task = ok(b.post("/v1/tasks", json={"title": "Beta queued", "queue": "alpha"}), 201)
        beta_claims = ok(b.post("/v1/queues/alpha/claim", json={"worker": WORKER, "limit": 10}))["claims"]
        assert [c["task"]["id"] for c in beta_claims] == [beta_task["id"]]
        listed = ok(b.get("/v1/tasks", params={"count": "true"}))
        assert listed["total"] == 2 and {t["id"] for t in listed["items"]} == {mine["id"], beta_task["id"]}
        assert [q["name"] for q in ok(b.get("/v1/queues"))["items"]] == ["alpha"]

    # and A sees none of B's
    a_titles = [t["title"] for t in ok(api.get("/v1/tasks", params={"limit": 500}))["items"]]
    assert not [t for t in a_titles if t.startswith("Beta")]
    assert ok(api.get(f"/v1/tasks/{ids['other']}"))["depends_on"] == []
    assert ok(api.post("/v1/queues/alpha/claim", json={"worker": WORKER}))["claims"][0]["task"]["id"] == ids["other"]
    a_queue = ok(api.get("/v1/queues/alpha"))
    assert a_queue["id"] == before["queues"]["items"][0]["id"]


def test_events_stream_delivers_only_its_own_workspace(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    b_key = make_key("other", "admin")
    with (
        server.client(timeout=10) as watcher,
        server.client(b_key) as b,
        watcher.stream("GET", "/v1/events/stream") as stream,
    ):
        assert stream.status_code == 200
        b_queue = ok(b.post("/v1/queues", json={"name": "beta-private-queue"}), 201)
        b_task = ok(b.post("/v1/tasks", json={"title": "beta-private-task", "queue": "beta-private-queue"}), 201)
        claimed = ok(b.post("/v1/queues/beta-private-queue/claim", json={"worker": WORKER}))["claims"][0]
        ok(b.post(f"/v1/runs/{claimed['run']['id']}/complete", json={"claim_token": claimed["claim_token"]}))
        marker = ok(api.post("/v1/tasks", json={"title": "alpha marker"}), 201)

        received: list[dict[str, Any]] = []
        data_lines: list[str] = []
        for line in stream.iter_lines():
            if line.startswith("data:"):
                data_lines.append(line)
                event = httpx.Response(200, content=line[5:].strip()).json()
                received.append(event)
                if event["task_id"] == marker["id"] and event["type"] == "task.created":
                    break
            assert len(data_lines) < 100, "the marker never arrived"
    assert received and received[-1]["task_id"] == marker["id"]
    assert all(e["task_id"] != b_task["id"] for e in received), received
    assert not [d for d in data_lines if "beta-private" in d or b_queue["id"] in d], data_lines


def test_authentication_and_roles(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    ids = setup_workspace_a(api)
    before = state_of_a(api, ids)
    unauthenticated = {
        "no header": {},
        "wrong key": {"Authorization": "Bearer wl_not_a_real_key"},
        "bearer without a key": {"Authorization": "Bearer"},
        "another scheme": {"Authorization": f"Basic {server.token}"},
        "bare key": {"Authorization": server.token},
    }
    wrong: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        for endpoint in [*SCOPED, *UNSCOPED]:
            for label, headers in unauthenticated.items():
                anonymous.headers.clear()
                anonymous.headers.update(headers)
                response = endpoint.send(anonymous, ids)
                if response.status_code != 401:
                    wrong.append(f"{endpoint} ({label}): {response.status_code} {response.text[:200]}")
                    continue
                if not response.headers.get("content-type", "").startswith("application/problem+json"):
                    wrong.append(f"{endpoint} ({label}): content-type {response.headers.get('content-type')}")
                    continue
                if response.json().get("type") != PROBLEMS + "unauthorized":
                    wrong.append(f"{endpoint} ({label}): {response.json()}")
                if "bearer" not in response.headers.get("www-authenticate", "").lower():
                    wrong.append(f"{endpoint} ({label}): no WWW-Authenticate: Bearer")
        anonymous.headers.clear()
        for path in ("/healthz", "/readyz", "/metrics"):
            assert anonymous.get(path).status_code == 200, path
    assert not wrong, f"{len(wrong)} requests without a valid key were not refused with 401:\n" + "\n".join(wrong)
    assert state_of_a(api, ids) == before, "unauthenticated requests changed something"

    with server.client(make_key("default", "agent")) as agent:
        refused = agent.post("/v1/queues", json={"name": "agents-queue"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"] == PROBLEMS + "forbidden"
        patched = agent.patch("/v1/queues/alpha", json={"lease_seconds": 5})
        assert patched.status_code == 403, patched.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert ok(api.get("/v1/queues/alpha"))["lease_seconds"] == 300
        assert [q["name"] for q in ok(api.get("/v1/queues"))["items"]] == ["alpha", "alpha-manual"]
        # what an agent may do: read, create tasks, work runs
        assert ok(agent.get(f"/v1/tasks/{ids['task']}"))["id"] == ids["task"]
        made = ok(agent.post("/v1/tasks", json={"title": "Agent-made", "queue": "alpha"}), 201)
        assert made["created_by"]["kind"] == "agent_session"
        claims = ok(agent.post("/v1/queues/alpha/claim", json={"worker": WORKER, "limit": 10}))["claims"]
        assert {c["task"]["id"] for c in claims} == {ids["other"], made["id"]}
