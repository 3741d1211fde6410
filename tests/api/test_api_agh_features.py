"""The native endpoints built for the AGH dialect, over HTTP against the real server on every database:
claim-next across queues, claiming one run, attaching a session, canceling one run, enqueueing, usage,
task scope, per-person triage and the inbox, and the observer dashboard."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
from serverproc import ServerProcess

WORKER = {"kind": "agent_session", "ref": "agent-1"}
PROBLEMS = "https://workloom.dev/problems/"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, got {response.status_code}: "
        f"{response.text}"
    )
    return response.json() if response.content else None


def problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if kind is not None:
        assert body["type"] == PROBLEMS + kind, body
    return body


def create(api: httpx.Client, title: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(api.post("/v1/tasks", json={"title": title, **fields}), 201)
    return body


def claim_next(api: httpx.Client, **extra: Any) -> dict[str, Any] | None:
    claim: dict[str, Any] | None = ok(api.post("/v1/claims/next", json={"worker": WORKER, **extra}))["claim"]
    return claim


def test_claim_next_session_usage_scope_and_origin(api: httpx.Client) -> None:
    low = create(api, "low", queue="a", priority="low", scope="global")
    urgent = create(api, "urgent", queue="b", priority="urgent")
    assert (low["scope"], urgent["scope"]) == ("global", "workspace")
    assert [t["id"] for t in ok(api.get("/v1/tasks", params={"scope": "global"}))["items"]] == [low["id"]]
    patched = ok(api.patch(f"/v1/tasks/{urgent['id']}", json={"scope": "global"}))
    assert patched["scope"] == "global"
    problem(api.post("/v1/tasks", json={"title": "x", "scope": "universe"}), 422, "validation-error")

    assert claim_next(api, queues=["nowhere"]) is None
    first = api.post("/v1/claims/next", json={"worker": WORKER}, headers={"Idempotency-Key": "next-1"})
    claim = ok(first)["claim"]
    assert claim["task"]["id"] == urgent["id"]
    again = ok(api.post("/v1/claims/next", json={"worker": WORKER}, headers={"Idempotency-Key": "next-1"}))
    assert again["claim"] == claim  # the same answer, token included; nothing else claimed
    run = claim["run"]
    assert (run["idempotency_key"], run["session_id"], run["origin"]["kind"]) == ("next-1", None, "http")

    token = claim["claim_token"]
    attached = ok(api.post(f"/v1/runs/{run['id']}/attach-session", json={"session_id": "sess-9", "claim_token": token}))
    assert (attached["status"], attached["session_id"]) == ("starting", "sess-9")
    problem(
        api.post(f"/v1/runs/{run['id']}/attach-session", json={"session_id": "s", "claim_token": "clm_wrong"}),
        409,
        "stale-claim",
    )
    ok(api.post(f"/v1/runs/{run['id']}/start", json={"claim_token": token}))
    ok(api.post(f"/v1/runs/{run['id']}/heartbeat", json={"claim_token": token, "usage": {"input_tokens": 10}}))
    done = ok(
        api.post(
            f"/v1/runs/{run['id']}/complete",
            json={"claim_token": token, "result": "ok", "usage": {"output_tokens": 4, "total_cost": 0.01}},
        )
    )
    assert done["usage"] == {"input_tokens": 10, "output_tokens": 4, "total_cost": 0.01}
    assert done["session_id"] == "sess-9"
    assert ok(api.get(f"/v1/tasks/{urgent['id']}/usage")) == {
        "usage": {"input_tokens": 10, "output_tokens": 4, "total_cost": 0.01, "total_tokens": 14}
    }
    types = [e["type"] for e in ok(api.get(f"/v1/tasks/{urgent['id']}/timeline"))["items"]]
    assert "run.session_attached" in types

    remaining = claim_next(api, queues=["a", "b"], lease_seconds=30)
    assert remaining is not None and remaining["task"]["id"] == low["id"]
    problem(api.post("/v1/claims/next", json={"worker": WORKER, "queues": []}), 422, "validation-error")
    problem(api.post("/v1/claims/next", json={}), 422, "validation-error")


def test_claim_next_long_polls_until_work_arrives(api: httpx.Client, server: ServerProcess) -> None:
    answer: dict[str, Any] = {}

    def wait() -> None:
        with server.client() as client:
            answer["response"] = client.post("/v1/claims/next", json={"worker": WORKER, "wait_seconds": 20})

    waiter = threading.Thread(target=wait)
    waiter.start()
    task = create(api, "arrives later", queue="late")
    waiter.join(timeout=25)
    assert not waiter.is_alive()
    claim = ok(answer["response"])["claim"]
    assert claim is not None and claim["task"]["id"] == task["id"]
    assert ok(api.post("/v1/claims/next", json={"worker": WORKER, "wait_seconds": 0})) == {"claim": None}


def test_enqueue_claim_one_run_and_cancel_it(api: httpx.Client) -> None:
    ok(api.post("/v1/queues", json={"name": "manual", "start_mode": "manual"}), 201)
    task = create(api, "by hand", queue="manual")
    assert ok(api.get(f"/v1/tasks/{task['id']}/runs"))["items"] == []

    run = ok(api.post(f"/v1/tasks/{task['id']}/runs", headers={"Idempotency-Key": "enq-1"}), 201)
    assert (run["status"], run["attempt"], run["idempotency_key"]) == ("queued", 1, "enq-1")
    problem(api.post(f"/v1/tasks/{task['id']}/runs"), 409, "conflict")
    problem(api.post("/v1/tasks/task_nope/runs"), 404, "not-found")

    claim = ok(api.post(f"/v1/runs/{run['id']}/claim", json={"worker": WORKER, "lease_seconds": 60}))
    assert (claim["run"]["id"], claim["run"]["status"], claim["task"]["status"]) == (
        run["id"],
        "claimed",
        "in_progress",
    )
    problem(api.post(f"/v1/runs/{run['id']}/claim", json={"worker": WORKER}), 409, "invalid-transition")

    canceled = ok(api.post(f"/v1/runs/{run['id']}/cancel", json={"reason": "wrong worker"}))
    assert (canceled["status"], canceled["end_reason"]) == ("canceled", "run_canceled")
    assert ok(api.get(f"/v1/tasks/{task['id']}"))["status"] == "ready"
    problem(api.post(f"/v1/runs/{run['id']}/cancel"), 409, "invalid-transition")
    problem(api.post(f"/v1/runs/{run['id']}/complete", json={"claim_token": claim["claim_token"]}), 409, "stale-claim")
    problem(api.post("/v1/runs/run_nope/cancel"), 404, "not-found")
    assert ok(api.post(f"/v1/tasks/{task['id']}/runs"), 201)["status"] == "queued"


def test_an_agent_key_attaches_a_session_only_to_runs_it_holds(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    with server.client(make_key("default", "agent")) as agent, server.client(make_key("default", "agent")) as other:
        own = create(agent, "agent work", queue="agents")
        me = own["created_by"]  # the agent key's own actor
        assert me["kind"] == "agent_session"
        claim = ok(agent.post("/v1/claims/next", json={"worker": me}))["claim"]
        run_id = claim["run"]["id"]
        problem(other.post(f"/v1/runs/{run_id}/attach-session", json={"session_id": "s"}), 409, "not-holder")
        attached = ok(agent.post(f"/v1/runs/{run_id}/attach-session", json={"session_id": "mine"}))
        assert (attached["status"], attached["session_id"]) == ("starting", "mine")

        # Claimed in another worker's name: without the token, the key is not its holder.
        create(api, "agent work 2", queue="agents")
        for_worker = ok(agent.post("/v1/claims/next", json={"worker": WORKER}))["claim"]
        other_run = for_worker["run"]["id"]
        problem(agent.post(f"/v1/runs/{other_run}/attach-session", json={"session_id": "s"}), 409, "not-holder")
        with_token = {"session_id": "s", "claim_token": for_worker["claim_token"]}
        assert ok(agent.post(f"/v1/runs/{other_run}/attach-session", json=with_token))["session_id"] == "s"
    # A person's key is an operator and needs no token.
    assert ok(api.post(f"/v1/runs/{run_id}/attach-session", json={"session_id": "ops"}))["session_id"] == "ops"


def test_each_key_has_its_own_inbox_and_triage(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    with server.client(make_key("default", "member")) as alice, server.client(make_key("default", "member")) as bob:
        gated = create(api, "approve me", queue="q", approval_policy="required")
        dependency = create(api, "dependency")
        blocked = create(api, "blocked", depends_on=[dependency["id"]])

        box = ok(alice.get("/v1/inbox"))
        assert set(box) == {"items", "lanes", "total", "unread_total", "archived_total"}
        assert [(i["lane"], i["task"]["id"], i["unread"]) for i in box["items"]] == [
            ("approvals", gated["id"], True),
            ("blocked", blocked["id"], True),
        ]
        item = box["items"][0]
        assert set(item) == {"lane", "unread", "reason", "error", "task", "triage", "run"}
        assert (item["reason"], item["run"], item["triage"]["read"]) == ("approval", None, False)
        assert box["lanes"] == [
            {"lane": "my_work", "count": 0, "unread_count": 0},
            {"lane": "approvals", "count": 1, "unread_count": 1},
            {"lane": "failed_runs", "count": 0, "unread_count": 0},
            {"lane": "blocked", "count": 1, "unread_count": 1},
            {"lane": "archived", "count": 0, "unread_count": 0},
        ]
        assert (box["total"], box["unread_total"], box["archived_total"]) == (2, 2, 0)

        read = ok(alice.post(f"/v1/tasks/{gated['id']}/triage/read"))
        assert set(read) == {
            "task_id", "actor", "read", "dismissed", "archived", "read_at", "dismissed_at", "archived_at",
            "last_seen_activity_at", "updated_at",
        }  # fmt: skip
        assert (read["read"], read["actor"]["kind"]) == (True, "human")
        assert ok(alice.get("/v1/inbox", params={"unread": "true"}))["unread_total"] == 1
        assert [i["task"]["id"] for i in ok(alice.get("/v1/inbox", params={"unread": "true"}))["items"]] == [
            blocked["id"]
        ]
        assert ok(bob.get("/v1/inbox"))["unread_total"] == 2
        assert ok(bob.get(f"/v1/tasks/{gated['id']}/triage"))["read"] is False

        ok(alice.post(f"/v1/tasks/{blocked['id']}/triage/dismiss"))
        ok(alice.post(f"/v1/tasks/{gated['id']}/triage/archive"))
        box = ok(alice.get("/v1/inbox"))
        assert [(i["lane"], i["task"]["id"]) for i in box["items"]] == [("archived", gated["id"])]
        assert (box["total"], box["archived_total"]) == (0, 1)
        assert [i["lane"] for i in ok(alice.get("/v1/inbox", params={"lane": "archived"}))["items"]] == ["archived"]
        assert len(ok(bob.get("/v1/inbox"))["items"]) == 2

        problem(alice.get("/v1/inbox", params={"lane": "nowhere"}), 422, "validation-error")
        problem(alice.get("/v1/inbox", params={"limit": 0}), 422, "validation-error")
        problem(alice.post(f"/v1/tasks/{gated['id']}/triage/star"), 422, "validation-error")
        problem(alice.post("/v1/tasks/task_nope/triage/read"), 404, "not-found")


def test_the_dashboard_over_http(api: httpx.Client) -> None:
    create(api, "waiting", queue="a")
    create(api, "gated", queue="a", approval_policy="required")
    create(api, "held", queue="b", owner={"kind": "human", "ref": "olga"})
    held = claim_next(api, queues=["b"])
    assert held is not None

    board = ok(api.get("/v1/dashboard"))
    assert set(board) == {
        "observed_at", "tasks", "runs", "status_breakdown", "active_runs", "queue", "latency", "freshness", "health",
        "cards",
    }  # fmt: skip
    assert board["tasks"]["total"] == 3
    assert board["tasks"]["by_status"]["blocked"] == 1 and board["tasks"]["awaiting_approval"] == 1
    assert board["tasks"]["blocked_by_reason"] == {"approval": 1}
    assert board["runs"]["by_status"]["queued"] == 1 and board["runs"]["by_status"]["claimed"] == 1
    assert board["active_runs"]["total"] == 2
    assert [i["run"]["status"] for i in board["active_runs"]["items"]] == ["claimed", "queued"]
    first = board["active_runs"]["items"][0]
    assert set(first) == {"run", "task", "max_attempts", "age_ms", "last_activity_at", "stuck", "health_status"}
    assert (first["task"]["id"], first["stuck"], first["health_status"]) == (held["task"]["id"], False, "healthy")
    assert [(d["queue"], d["count"]) for d in board["queue"]["depth"]] == [("a", 1)]
    assert board["queue"]["backlog_status"] == "ok"
    assert board["latency"]["claim"]["samples"] == 1
    assert (board["freshness"]["status"], board["health"]["status"]) == ("live", "healthy")
    assert sum(s["count"] for s in board["status_breakdown"]) == 3
    assert board["cards"] == {"blocked": "attention", "failed": "healthy", "in_progress": "healthy"}

    mine = ok(api.get("/v1/dashboard", params={"owner_kind": "human", "owner_ref": "olga"}))
    assert (mine["tasks"]["total"], mine["runs"]["total"]) == (1, 1)
    assert ok(api.get("/v1/dashboard", params={"queue": "a"}))["tasks"]["total"] == 2
    quiet = ok(api.get("/v1/dashboard", params={"stale_after_seconds": 0, "active_limit": 0}))
    assert (quiet["active_runs"]["items"], quiet["freshness"]["status"]) == ([], "stale")
    problem(api.get("/v1/dashboard", params={"origin_kind": "telepathy"}), 422, "validation-error")
    problem(api.get("/v1/dashboard", params={"active_limit": -1}), 422, "validation-error")


def test_the_new_endpoints_are_walled_off_and_need_a_key(
    server: ServerProcess, api: httpx.Client, make_key: Callable[[str, str], str]
) -> None:
    task = create(api, "ours", queue="q", approval_policy="required")
    ready = create(api, "ready", queue="r")
    run = ok(api.get(f"/v1/tasks/{ready['id']}/runs"))["items"][0]
    scoped = [
        ("POST", f"/v1/tasks/{task['id']}/triage/read", None),
        ("GET", f"/v1/tasks/{task['id']}/triage", None),
        ("POST", f"/v1/tasks/{ready['id']}/runs", None),
        ("GET", f"/v1/tasks/{ready['id']}/usage", None),
        ("POST", f"/v1/runs/{run['id']}/claim", {"worker": WORKER}),
        ("POST", f"/v1/runs/{run['id']}/attach-session", {"session_id": "s"}),
        ("POST", f"/v1/runs/{run['id']}/cancel", {}),
    ]
    with server.client(make_key("other", "admin")) as intruder:
        for method, path, body in scoped:
            problem(intruder.request(method, path, json=body), 404, "not-found")
        assert ok(intruder.get("/v1/inbox"))["items"] == []
        assert ok(intruder.get("/v1/dashboard"))["tasks"]["total"] == 0
        assert ok(intruder.post("/v1/claims/next", json={"worker": WORKER})) == {"claim": None}
    assert ok(api.get(f"/v1/runs/{run['id']}"))["status"] == "queued"
    with httpx.Client(base_url=server.url) as anonymous:
        for method, path, body in [
            *scoped,
            ("GET", "/v1/inbox", None),
            ("GET", "/v1/dashboard", None),
            ("POST", "/v1/claims/next", {"worker": WORKER}),
        ]:
            problem(anonymous.request(method, path, json=body), 401, "unauthorized")
