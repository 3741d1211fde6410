"""The whole life of tasks and runs over HTTP, against the real server on every database.

Each test boots one server and walks through a story, checking what a client can observe at each step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from serverproc import ServerProcess, poll

WORKER = {"kind": "automation", "ref": "worker-1"}


# -- helpers --------------------------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " + (
        f"expected {status}, got {response.status_code}: {response.text}"
    )
    return response.json() if response.content else None


def problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, got {response.status_code}: "
        f"{response.text}"
    )
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if kind is not None:
        assert body["type"] == f"https://workloom.dev/problems/{kind}", body
    return body


def create_queue(api: httpx.Client, name: str, **settings: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(api.post("/v1/queues", json={"name": name, **settings}), 201)
    return body


def create_task(api: httpx.Client, title: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(api.post("/v1/tasks", json={"title": title, **fields}), 201)
    return body


def get_task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(api.get(f"/v1/tasks/{task_id}"))
    return body


def claim(api: httpx.Client, queue: str, **extra: Any) -> list[dict[str, Any]]:
    claims: list[dict[str, Any]] = ok(api.post(f"/v1/queues/{queue}/claim", json={"worker": WORKER, **extra}))["claims"]
    return claims


def claim_one(api: httpx.Client, queue: str, **extra: Any) -> dict[str, Any]:
    claims = claim(api, queue, **extra)
    assert len(claims) == 1, claims
    return claims[0]


def timeline(api: httpx.Client, task_id: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(api.get(f"/v1/tasks/{task_id}/timeline", params=params))["items"]
    return items


def runs_of(api: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(api.get(f"/v1/tasks/{task_id}/runs"))["items"]
    return items


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


TASK_FIELDS = {
    "id", "identifier", "workspace_id", "title", "description", "queue", "status", "blocked_reason", "priority",
    "draft", "approval_policy", "approval_state", "parent_task_id", "depends_on", "max_attempts", "attempts", "data",
    "output", "error", "due_at", "overdue_at", "owner", "created_by", "origin", "metadata", "created_at", "updated_at",
    "closed_at", "last_activity_at", "scope",
}  # fmt: skip
RUN_FIELDS = {
    "id", "task_id", "queue", "attempt", "status", "available_at", "queued_at", "claimed_at", "started_at", "ended_at",
    "heartbeat_at", "lease_until", "claimed_by", "end_reason", "error", "result", "progress", "usage", "metadata",
    "session_id", "origin", "idempotency_key",
}  # fmt: skip
QUEUE_FIELDS = {
    "id", "name", "description", "lease_seconds", "max_attempts", "initial_interval_seconds", "backoff_coefficient",
    "max_interval_seconds", "start_mode", "created_at", "updated_at",
}  # fmt: skip
EVENT_FIELDS = {"sequence", "task_sequence", "type", "task_id", "run_id", "actor", "origin", "payload", "created_at"}


# -- the happy path ---------------------------------------------------------------------------------------


def test_claim_start_heartbeat_complete(api: httpx.Client) -> None:
    queue = create_queue(api, "work", description="the main line")
    assert set(queue) == QUEUE_FIELDS
    assert queue["name"] == "work" and queue["description"] == "the main line"
    assert (queue["lease_seconds"], queue["max_attempts"], queue["start_mode"]) == (300, 3, "auto")
    assert (queue["initial_interval_seconds"], queue["backoff_coefficient"], queue["max_interval_seconds"]) == (
        1,
        2,
        300,
    )
    assert ok(api.get("/v1/queues/work")) == queue
    patched = ok(api.patch("/v1/queues/work", json={"lease_seconds": 120}))
    assert patched["lease_seconds"] == 120 and patched["description"] == "the main line"
    assert [q["name"] for q in ok(api.get("/v1/queues"))["items"]] == ["work"]
    problem(api.post("/v1/queues", json={"name": "work"}), 409)

    task = create_task(api, "Summarise the report", queue="work", data={"url": "https://example.com/r.pdf"})
    assert set(task) == TASK_FIELDS
    assert task["status"] == "ready" and task["queue"] == "work" and task["attempts"] == 0
    assert task["data"] == {"url": "https://example.com/r.pdf"} and task["output"] is None
    assert task["identifier"] == "WL-1"

    c = claim_one(api, "work")
    assert set(c) == {"task", "run", "claim_token", "lease_until"}
    assert isinstance(c["claim_token"], str) and c["claim_token"]
    assert c["task"]["id"] == task["id"] and c["task"]["status"] == "in_progress"
    run = c["run"]
    assert set(run) == RUN_FIELDS
    assert run["status"] == "claimed" and run["attempt"] == 1 and run["task_id"] == task["id"]
    assert run["claimed_by"] == WORKER and run["queue"] == "work"
    assert when(c["lease_until"]) == when(run["lease_until"])
    claimed_at = when(run["claimed_at"])
    assert 119 <= (when(c["lease_until"]) - claimed_at).total_seconds() <= 121  # the queue's patched lease
    assert get_task(api, task["id"])["status"] == "in_progress"
    assert claim(api, "work") == []  # nothing else to hand out

    token = c["claim_token"]
    started = ok(api.post(f"/v1/runs/{run['id']}/start", json={"claim_token": token}))
    assert started["status"] == "running" and started["started_at"] is not None

    beat = ok(
        api.post(
            f"/v1/runs/{run['id']}/heartbeat",
            json={"claim_token": token, "extend_seconds": 3600, "progress": {"pct": 40}},
        )
    )
    assert when(beat["lease_until"]) > when(c["lease_until"])
    assert (when(beat["lease_until"]) - when(beat["heartbeat_at"])).total_seconds() >= 3599
    assert beat["progress"] == {"pct": 40}
    assert when(ok(api.get(f"/v1/runs/{run['id']}"))["lease_until"]) == when(beat["lease_until"])

    problem(api.post(f"/v1/runs/{run['id']}/complete", json={"claim_token": "clm_wrong"}), 409, "stale-claim")

    result = {"summary": "all good", "pages": 12}
    done = ok(api.post(f"/v1/runs/{run['id']}/complete", json={"claim_token": token, "result": result}))
    assert done["status"] == "completed" and done["result"] == result and done["ended_at"] is not None

    finished = get_task(api, task["id"])
    assert finished["status"] == "completed" and finished["output"] == result
    assert finished["closed_at"] is not None and finished["attempts"] == 1
    assert [r["status"] for r in runs_of(api, task["id"])] == ["completed"]
    assert ok(api.get(f"/v1/runs/{run['id']}"))["status"] == "completed"

    # a second complete of an ended run is refused, and changes nothing
    problem(api.post(f"/v1/runs/{run['id']}/complete", json={"claim_token": token, "result": 1}), 409, "stale-claim")
    assert get_task(api, task["id"])["output"] == result

    events = timeline(api, task["id"])
    assert all(set(e) == EVENT_FIELDS for e in events)
    assert [e["task_sequence"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["task_id"] == task["id"] for e in events)
    types = [e["type"] for e in events]
    for expected in ("task.created", "run.claimed", "run.started", "run.completed", "task.completed"):
        assert expected in types, types
    assert types[0] == "task.created"
    assert types.index("run.claimed") < types.index("run.completed") < len(types)
    assert types.count("task.completed") == 1
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences)
    later = timeline(api, task["id"], after_sequence=2)
    assert later == events[2:]
    assert timeline(api, task["id"], after_sequence=len(events)) == []

    # claims hand out the most urgent work first, the oldest first within a priority; PATCH reorders
    made = {p: create_task(api, f"{p} job", queue="work", priority=p) for p in ("low", "medium", "high")}
    first_urgent = create_task(api, "urgent job", queue="work", priority="urgent")
    second_urgent = create_task(api, "urgent job 2", queue="work", priority="urgent")
    ok(api.patch(f"/v1/tasks/{made['low']['id']}", json={"priority": "urgent"}))
    order = [c["task"]["id"] for c in claim(api, "work", limit=10)]
    expected = [made["low"], first_urgent, second_urgent, made["high"], made["medium"]]  # low was queued first
    assert order == [t["id"] for t in expected]


def test_fail_then_retry_then_fail_permanently(api: httpx.Client) -> None:
    create_queue(api, "flaky", initial_interval_seconds=0, max_attempts=5)
    task = create_task(api, "Call the flaky service", queue="flaky")

    first = claim_one(api, "flaky")
    assert first["run"]["attempt"] == 1
    failed = ok(
        api.post(f"/v1/runs/{first['run']['id']}/fail", json={"claim_token": first["claim_token"], "error": "503"})
    )
    assert failed["status"] == "failed" and failed["error"] == "503"
    after_first = get_task(api, task["id"])
    assert after_first["status"] == "ready" and after_first["attempts"] == 1

    second = claim_one(api, "flaky")  # no backoff: claimable at once
    assert second["task"]["id"] == task["id"]
    assert second["run"]["attempt"] == 2 and second["run"]["id"] != first["run"]["id"]
    # the first token no longer holds anything
    problem(
        api.post(f"/v1/runs/{first['run']['id']}/complete", json={"claim_token": first["claim_token"]}),
        409,
        "stale-claim",
    )
    problem(
        api.post(f"/v1/runs/{second['run']['id']}/complete", json={"claim_token": first["claim_token"]}),
        409,
        "stale-claim",
    )
    ok(
        api.post(
            f"/v1/runs/{second['run']['id']}/fail",
            json={"claim_token": second["claim_token"], "error": "bad input", "retryable": False},
        )
    )
    final = get_task(api, task["id"])
    assert final["status"] == "failed" and final["error"] == "bad input" and final["closed_at"] is not None
    assert final["attempts"] == 2
    assert claim(api, "flaky") == []
    assert [(r["attempt"], r["status"]) for r in runs_of(api, task["id"])] == [(1, "failed"), (2, "failed")]
    types = [e["type"] for e in timeline(api, task["id"])]
    assert types.count("run.failed") == 2 and types[-1] == "task.failed"

    # attempts run out: max_attempts on the task wins over the queue's
    limited = create_task(api, "Two tries only", queue="flaky", max_attempts=2)
    for attempt in (1, 2):
        c = claim_one(api, "flaky")
        assert (c["task"]["id"], c["run"]["attempt"]) == (limited["id"], attempt)
        ok(api.post(f"/v1/runs/{c['run']['id']}/fail", json={"claim_token": c["claim_token"], "error": "again"}))
    assert get_task(api, limited["id"])["status"] == "failed"
    assert claim(api, "flaky") == []


def test_release_gives_the_task_back_without_spending_an_attempt(api: httpx.Client) -> None:
    task = create_task(api, "Hand me back", queue="shared")  # naming a new queue creates it with defaults
    assert ok(api.get("/v1/queues/shared"))["max_attempts"] == 3
    c = claim_one(api, "shared")
    released = ok(
        api.post(f"/v1/runs/{c['run']['id']}/release", json={"claim_token": c["claim_token"], "reason": "shift over"})
    )
    assert released["status"] == "canceled" and released["end_reason"] == "released"
    back = get_task(api, task["id"])
    assert back["status"] == "ready" and back["attempts"] == 0
    runs = runs_of(api, task["id"])
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "canceled"), (1, "queued")]

    again = claim_one(api, "shared")
    assert again["task"]["id"] == task["id"] and again["run"]["attempt"] == 1
    assert again["run"]["id"] == runs[1]["id"]
    problem(api.post(f"/v1/runs/{c['run']['id']}/heartbeat", json={"claim_token": c["claim_token"]}), 409)
    assert "run.released" in [e["type"] for e in timeline(api, task["id"])]


# -- idempotency and long-poll --------------------------------------------------------------------------


def test_idempotency_keys(api: httpx.Client) -> None:
    body = {"title": "Exactly once", "queue": "idem", "data": {"n": 1}}
    first = api.post("/v1/tasks", json=body, headers={"Idempotency-Key": "create-1"})
    repeat = api.post("/v1/tasks", json=body, headers={"Idempotency-Key": "create-1"})
    assert first.status_code == repeat.status_code == 201
    assert repeat.json() == first.json()
    listed = ok(api.get("/v1/tasks", params={"q": "Exactly once", "count": "true"}))
    assert listed["total"] == 1 and [t["id"] for t in listed["items"]] == [first.json()["id"]]

    reused = problem(
        api.post("/v1/tasks", json={**body, "data": {"n": 2}}, headers={"Idempotency-Key": "create-1"}),
        409,
        "idempotency-key-reused",
    )
    assert reused["detail"]
    assert ok(api.get("/v1/tasks", params={"count": "true"}))["total"] == 1

    c1 = ok(api.post("/v1/queues/idem/claim", json={"worker": WORKER}, headers={"Idempotency-Key": "claim-1"}))
    c2 = ok(api.post("/v1/queues/idem/claim", json={"worker": WORKER}, headers={"Idempotency-Key": "claim-1"}))
    assert len(c1["claims"]) == 1
    assert c2 == c1 and c2["claims"][0]["claim_token"] == c1["claims"][0]["claim_token"]
    run_id = c1["claims"][0]["run"]["id"]
    token = c1["claims"][0]["claim_token"]

    done = {"claim_token": token, "result": {"ok": True}}
    r1 = api.post(f"/v1/runs/{run_id}/complete", json=done, headers={"Idempotency-Key": "complete-1"})
    r2 = api.post(f"/v1/runs/{run_id}/complete", json=done, headers={"Idempotency-Key": "complete-1"})
    assert r1.status_code == r2.status_code == 200
    assert r2.json() == r1.json() and r1.json()["status"] == "completed"
    problem(
        api.post(f"/v1/runs/{run_id}/complete", json={**done, "result": 2}, headers={"Idempotency-Key": "complete-1"}),
        409,
        "idempotency-key-reused",
    )
    types = [e["type"] for e in timeline(api, first.json()["id"])]
    assert types.count("task.completed") == 1 and types.count("run.claimed") == 1
    assert get_task(api, first.json()["id"])["output"] == {"ok": True}


def test_long_poll_claim_returns_when_work_arrives(server: ServerProcess, api: httpx.Client) -> None:
    create_queue(api, "inbox")

    began = time.monotonic()
    assert claim(api, "inbox", wait_seconds=1) == []
    assert time.monotonic() - began >= 0.9  # an empty long-poll waits out its wait_seconds

    answer: dict[str, Any] = {}

    def wait_for_work() -> None:
        with server.client() as worker:
            started = time.monotonic()
            try:
                answer["response"] = worker.post("/v1/queues/inbox/claim", json={"worker": WORKER, "wait_seconds": 5})
            finally:
                answer["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    task = create_task(api, "Arrives while someone waits", queue="inbox")
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    claims = ok(answer["response"])["claims"]
    assert [c["task"]["id"] for c in claims] == [task["id"]]
    assert answer["elapsed"] < 4, f"long-poll took {answer['elapsed']:.2f}s to notice new work"

    problem(api.post("/v1/queues/nowhere/claim", json={"worker": WORKER}), 404, "not-found")
    problem(api.post("/v1/queues/nowhere/claim", json={"worker": WORKER, "wait_seconds": 2}), 404, "not-found")


# -- structure: children, dependencies, approval, manual start ------------------------------------------


def test_children_tree_and_cancel_subtree(api: httpx.Client) -> None:
    parent = create_task(api, "Launch")
    child_a = ok(api.post(f"/v1/tasks/{parent['id']}/children", json={"title": "Write copy", "queue": "w"}), 201)
    child_b = ok(api.post(f"/v1/tasks/{parent['identifier']}/children", json={"title": "Design"}), 201)
    grandchild = create_task(api, "Pick font", parent_task_id=child_b["id"])
    assert child_a["parent_task_id"] == parent["id"] and child_b["parent_task_id"] == parent["id"]
    assert grandchild["parent_task_id"] == child_b["id"]

    listed = ok(api.get(f"/v1/tasks/{parent['id']}/children"))["items"]
    assert sorted(t["id"] for t in listed) == sorted([child_a["id"], child_b["id"]])
    by_parent = ok(api.get("/v1/tasks", params={"parent_task_id": child_b["id"]}))["items"]
    assert [t["id"] for t in by_parent] == [grandchild["id"]]

    tree = ok(api.get(f"/v1/tasks/{parent['id']}/tree"))
    assert tree["task"]["id"] == parent["id"]
    kids = {node["task"]["id"]: node for node in tree["children"]}
    assert set(kids) == {child_a["id"], child_b["id"]}
    assert kids[child_a["id"]]["children"] == []
    assert [n["task"]["id"] for n in kids[child_b["id"]]["children"]] == [grandchild["id"]]
    assert kids[child_b["id"]]["children"][0]["children"] == []

    problem(api.delete(f"/v1/tasks/{parent['id']}"), 409)  # has children

    held = claim_one(api, "w")
    assert held["task"]["id"] == child_a["id"]
    canceled = ok(api.post(f"/v1/tasks/{parent['id']}/cancel", json={"reason": "launch called off"}))
    assert canceled["status"] == "canceled" and canceled["closed_at"] is not None
    for t in (child_a, child_b, grandchild):
        assert get_task(api, t["id"])["status"] == "canceled", t["title"]
    assert [r["status"] for r in runs_of(api, child_a["id"])] == ["canceled"]
    # the holder of the canceled run has lost its lease
    problem(
        api.post(f"/v1/runs/{held['run']['id']}/complete", json={"claim_token": held["claim_token"]}),
        409,
        "stale-claim",
    )
    assert get_task(api, child_a["id"])["status"] == "canceled"
    problem(api.post(f"/v1/tasks/{parent['id']}/cancel"), 409)  # already canceled

    # PATCH and DELETE
    lone = create_task(api, "Scratch", priority="low")
    patched = ok(api.patch(f"/v1/tasks/{lone['id']}", json={"title": "Scratch 2", "priority": "high"}))
    assert (patched["title"], patched["priority"]) == ("Scratch 2", "high")
    deleted = api.delete(f"/v1/tasks/{lone['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    problem(api.get(f"/v1/tasks/{lone['id']}"), 404, "not-found")


def test_dependencies_block_until_done_and_cycles_are_refused(api: httpx.Client) -> None:
    first = create_task(api, "Fetch data", queue="deps")
    second = create_task(api, "Analyse data", queue="deps", depends_on=[first["id"]])
    assert second["status"] == "blocked" and second["blocked_reason"] == "dependencies"
    assert second["depends_on"] == [first["id"]]
    assert runs_of(api, second["id"]) == []

    c = claim_one(api, "deps")
    assert c["task"]["id"] == first["id"]  # the blocked task has nothing to claim
    ok(api.post(f"/v1/runs/{c['run']['id']}/complete", json={"claim_token": c["claim_token"]}))
    unblocked = get_task(api, second["id"])
    assert unblocked["status"] == "ready" and unblocked["blocked_reason"] is None
    assert claim_one(api, "deps")["task"]["id"] == second["id"]

    # a cycle x -> y -> z -> x is refused, naming the tasks on it
    x = create_task(api, "X")
    y = create_task(api, "Y", depends_on=[x["id"]])
    z = create_task(api, "Z", depends_on=[y["identifier"]])
    assert z["depends_on"] == [y["id"]]
    cycle = problem(api.post(f"/v1/tasks/{x['id']}/dependencies", json={"depends_on": [z["id"]]}), 409)
    assert "cycle" in cycle["detail"]
    for t in (x, y, z):
        assert t["identifier"] in cycle["detail"], cycle
    assert get_task(api, x["id"])["depends_on"] == []
    problem(api.post(f"/v1/tasks/{x['id']}/dependencies", json={"depends_on": [x["id"]]}), 422)

    # adding and removing a dependency moves the task between blocked and ready
    w = create_task(api, "W")
    blocked = ok(api.post(f"/v1/tasks/{w['id']}/dependencies", json={"depends_on": [x["id"]]}))
    assert blocked["status"] == "blocked" and blocked["depends_on"] == [x["id"]]
    freed = ok(api.delete(f"/v1/tasks/{w['id']}/dependencies/{x['id']}"))
    assert freed["status"] == "ready" and freed["depends_on"] == []
    problem(api.delete(f"/v1/tasks/{w['id']}/dependencies/{x['id']}"), 404)

    # deleting a task others wait for must not strand them: refuse it, or let them go
    needed = create_task(api, "Needed")
    waiting = create_task(api, "Waits for it", queue="deps", depends_on=[needed["id"]])
    deleted = api.delete(f"/v1/tasks/{needed['id']}")
    after = get_task(api, waiting["id"])
    if deleted.status_code == 409:
        assert after["status"] == "blocked" and after["depends_on"] == [needed["id"]]
    else:
        assert deleted.status_code == 204, deleted.text
        assert (after["status"], after["blocked_reason"], after["depends_on"]) == ("ready", None, []), after
        assert claim_one(api, "deps")["task"]["id"] == waiting["id"]


def test_approval_drafts_and_manual_start(api: httpx.Client) -> None:
    gated = create_task(api, "Deploy to prod", queue="ops", approval_policy="required")
    assert gated["status"] == "blocked" and gated["blocked_reason"] == "approval"
    assert gated["approval_state"] == "pending"
    assert claim(api, "ops") == []
    approved = ok(api.post(f"/v1/tasks/{gated['id']}/approve", json={"comment": "go"}))
    assert approved["status"] == "ready" and approved["approval_state"] == "approved"
    problem(api.post(f"/v1/tasks/{gated['id']}/approve"), 409)
    assert claim_one(api, "ops")["task"]["id"] == gated["id"]

    refused = create_task(api, "Drop the database", queue="ops", approval_policy="required")
    rejected = ok(api.post(f"/v1/tasks/{refused['id']}/reject", json={"reason": "no"}))
    assert rejected["status"] == "canceled" and rejected["approval_state"] == "rejected"
    problem(api.post(f"/v1/tasks/{refused['id']}/reject"), 409)
    problem(api.post(f"/v1/tasks/{create_task(api, 'Ungated')['id']}/approve"), 409)

    draft = create_task(api, "Half-written", queue="ops", draft=True)
    assert draft["status"] == "draft" and draft["draft"] is True
    assert claim(api, "ops") == []
    published = ok(api.post(f"/v1/tasks/{draft['id']}/publish"))
    assert published["status"] == "ready" and published["draft"] is False
    problem(api.post(f"/v1/tasks/{draft['id']}/publish"), 409)
    assert claim_one(api, "ops")["task"]["id"] == draft["id"]

    manual = create_queue(api, "by-hand", start_mode="manual")
    assert manual["start_mode"] == "manual"
    waiting = create_task(api, "Only when asked", queue="by-hand")
    assert waiting["status"] == "ready"
    assert runs_of(api, waiting["id"]) == []
    assert claim(api, "by-hand") == []
    started = ok(api.post(f"/v1/tasks/{waiting['id']}/start"))
    assert started["status"] == "ready"
    assert [r["status"] for r in runs_of(api, waiting["id"])] == ["queued"]
    assert claim_one(api, "by-hand")["task"]["id"] == waiting["id"]
    problem(api.post(f"/v1/tasks/{create_task(api, 'No queue')['id']}/start"), 409)


# -- listing ------------------------------------------------------------------------------------------------


def test_listing_filters_sort_and_pages(api: httpx.Client) -> None:
    priorities = ["low", "medium", "high", "urgent"]
    made = []
    for i in range(13):
        made.append(
            create_task(
                api,
                f"{'Invoice' if i % 3 == 0 else 'Chore'} number {i}",
                priority=priorities[i % 4],
                queue="billing" if i % 2 == 0 else "misc",
            )
        )
    claim_one(api, "misc")  # one task in progress
    by_id = {t["id"]: t for t in made}

    def ids(**params: Any) -> list[str]:
        return [t["id"] for t in ok(api.get("/v1/tasks", params=params))["items"]]

    in_progress = ids(status="in_progress")
    assert len(in_progress) == 1 and by_id[in_progress[0]]["queue"] == "misc"
    assert len(ids(status="ready")) == 12
    assert sorted(ids(status__in="ready,in_progress")) == sorted(by_id)
    assert ids(status="completed") == []
    assert sorted(ids(priority="urgent")) == sorted(i for i, t in by_id.items() if t["priority"] == "urgent")
    assert sorted(ids(priority__in="low,high")) == sorted(
        i for i, t in by_id.items() if t["priority"] in ("low", "high")
    )
    assert sorted(ids(queue="billing")) == sorted(i for i, t in by_id.items() if t["queue"] == "billing")
    assert sorted(ids(queue="billing", priority="low")) == sorted(
        i for i, t in by_id.items() if t["queue"] == "billing" and t["priority"] == "low"
    )
    assert sorted(ids(q="invoice")) == sorted(i for i, t in by_id.items() if t["title"].startswith("Invoice"))
    assert ids(q="WL-5") == [made[4]["id"]]
    assert ids(q="nothing like this") == []

    rank = {p: n for n, p in enumerate(priorities)}
    ordered = ok(api.get("/v1/tasks", params={"sort": "-priority,created_at", "limit": 500}))["items"]
    keys = [(-rank[t["priority"]], t["created_at"], t["identifier"]) for t in ordered]
    assert [k[:2] for k in keys] == sorted(k[:2] for k in keys)
    assert ordered[0]["priority"] == "urgent" and ordered[-1]["priority"] == "low"
    by_number = ok(api.get("/v1/tasks", params={"sort": "identifier"}))["items"]
    assert [t["identifier"] for t in by_number] == [f"WL-{n}" for n in range(1, 14)]

    counted = ok(api.get("/v1/tasks", params={"count": "true", "limit": 1}))
    assert counted["total"] == 13 and len(counted["items"]) == 1
    assert "total" not in ok(api.get("/v1/tasks"))
    assert ok(api.get("/v1/tasks", params={"count": "true", "queue": "misc"}))["total"] == 6

    for sort in ("title", "-priority,created_at", "-created_at"):
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 5, "sort": sort}
        pages = 0
        while True:
            page = ok(api.get("/v1/tasks", params=params))
            assert len(page["items"]) <= 5
            seen.extend(t["id"] for t in page["items"])
            pages += 1
            assert pages <= 10
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert pages == 3, sort
        assert len(seen) == len(set(seen)) == 13, sort
        full = [t["id"] for t in ok(api.get("/v1/tasks", params={"sort": sort, "limit": 500}))["items"]]
        assert seen == full, sort


# -- identifiers and operations ---------------------------------------------------------------------------


def test_identifiers_health_metrics_and_request_ids(server: ServerProcess, api: httpx.Client) -> None:
    first = create_task(api, "One", queue="metered")
    second = create_task(api, "Two", queue="metered")
    third = create_task(api, "Three")
    assert [t["identifier"] for t in (first, second, third)] == ["WL-1", "WL-2", "WL-3"]
    assert get_task(api, "WL-2")["id"] == second["id"]
    assert ok(api.get("/v1/tasks/WL-2/timeline"))["items"][0]["task_id"] == second["id"]
    problem(api.get("/v1/tasks/WL-4"), 404, "not-found")

    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        health = anonymous.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        lines = metrics.text.splitlines()
        task_lines = [line for line in lines if line.startswith("workloom_tasks{")]
        assert any('queue="metered"' in line and 'status="ready"' in line and line.endswith(" 2.0") for line in lines)
        assert task_lines, metrics.text
        depth = [line for line in lines if line.startswith("workloom_queue_depth{") and 'queue="metered"' in line]
        assert depth and depth[0].endswith(" 2.0"), depth

    echoed = api.get("/v1/tasks", headers={"X-Request-ID": "req-abc-123"})
    assert echoed.headers["x-request-id"] == "req-abc-123"
    assert api.get("/v1/nothing-here", headers={"X-Request-ID": "req-404"}).headers["x-request-id"] == "req-404"
    generated = api.get("/v1/tasks").headers.get("x-request-id")
    assert generated
    assert api.get("/v1/tasks").headers["x-request-id"] != generated


def counters(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample of ``/metrics``: (name, sorted labels) → value."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
    }


def test_metrics_count_requests_claims_completions_failures_and_lease_expiries(
    server: ServerProcess, api: httpx.Client
) -> None:
    create_queue(api, "counted", max_attempts=1)
    for title in ("done", "failed", "lapsed"):
        create_task(api, title, queue="counted")
    held = {c["task"]["title"]: c for c in claim(api, "counted", limit=2)}
    lapsed = claim_one(api, "counted", lease_seconds=1)
    done, failed = held["done"], held["failed"]
    ok(api.post(f"/v1/runs/{done['run']['id']}/complete", json={"claim_token": done["claim_token"]}))
    body = {"claim_token": failed["claim_token"], "error": "no", "retryable": False}
    ok(api.post(f"/v1/runs/{failed['run']['id']}/fail", json=body))
    problem(api.get("/v1/tasks/WL-99"), 404, "not-found")
    problem(api.post("/v1/tasks", content=b"title=x", headers={"Content-Type": "text/plain"}), 415)

    def lapsed_run_ended() -> bool:
        return any(r["end_reason"] == "lease_expired" for r in runs_of(api, lapsed["task"]["id"]))

    poll(lapsed_run_ended, "the lapsed lease to be expired by the ticker", timeout=30)

    seen = counters(server)
    assert seen[("workloom_claims_total", (("queue", "counted"),))] == 3
    assert seen[("workloom_completions_total", ())] == 1
    assert seen[("workloom_failures_total", ())] == 1
    assert seen[("workloom_lease_expiries_total", ())] == 1
    requests = {labels: value for (name, labels), value in seen.items() if name == "workloom_http_requests_total"}
    assert requests[(("method", "POST"), ("status", "201"))] == 4  # the queue and three tasks
    assert requests[(("method", "GET"), ("status", "404"))] == 1
    assert requests[(("method", "POST"), ("status", "415"))] == 1
    # A request is counted when it ends: the scrape above is not, the next one sees it.
    scrapes = requests.get((("method", "GET"), ("status", "200")), 0)
    after = counters(server)[("workloom_http_requests_total", (("method", "GET"), ("status", "200")))]
    assert after == scrapes + 1


def test_readiness_probes_log_nothing_but_their_requests(start_server: Callable[..., ServerProcess]) -> None:
    # Load balancers probe every few seconds: each probe is one line of the request log, no more.
    server = start_server(WORKLOOM_LOG_LEVEL="info")
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        logged = server.log_path.read_text().count("\n")
        for _ in range(3):
            assert anonymous.get("/readyz").json() == {"status": "ok", "detail": "ok"}

        def probes_logged() -> list[str]:
            return server.log_path.read_text().splitlines()[logged:]

        poll(lambda: len(probes_logged()) >= 3, "the probes' request lines")
    assert [orjson.loads(line)["logger"] for line in probes_logged()] == ["workloom.http"] * 3
