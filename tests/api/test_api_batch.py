"""The batch endpoints: many tasks created in one transaction, many runs completed in one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

WORKER = {"kind": "automation", "ref": "batch-worker"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    return response.json()


def test_batch_create_numbers_settles_and_records_like_one_at_a_time(api: httpx.Client) -> None:
    ok(api.post("/v1/queues", json={"name": "bq"}), 201)
    ok(api.post("/v1/queues", json={"name": "manual", "start_mode": "manual"}), 201)
    body = {
        "tasks": [
            {"title": "a", "queue": "bq", "data": {"n": 1}, "priority": "high"},
            {"title": "b", "queue": "bq", "draft": True},
            {"title": "c", "queue": "bq", "approval_policy": "required"},
            {"title": "d"},
            {"title": "e", "queue": "manual"},
            {"title": "f", "queue": "new-queue"},
        ]
    }
    items = ok(api.post("/v1/tasks/batch", json=body), 201)["items"]
    assert [t["title"] for t in items] == ["a", "b", "c", "d", "e", "f"]
    numbers = [int(t["identifier"].split("-")[1]) for t in items]
    assert numbers == list(range(numbers[0], numbers[0] + 6))
    assert [t["status"] for t in items] == ["ready", "draft", "blocked", "ready", "ready", "ready"]
    assert items[2]["blocked_reason"] == "approval"

    # Each agrees with what one-at-a-time creation gives: same state, same timeline, same runs.
    single = ok(api.post("/v1/tasks", json={"title": "a", "queue": "bq", "data": {"n": 1}, "priority": "high"}), 201)
    for a, b in ((items[0], single),):
        for field in ("status", "queue", "priority", "data", "blocked_reason", "approval_state", "draft"):
            assert a[field] == b[field], field
        ta = ok(api.get(f"/v1/tasks/{a['id']}/timeline"))["items"]
        tb = ok(api.get(f"/v1/tasks/{b['id']}/timeline"))["items"]
        assert [(e["type"], e["task_sequence"]) for e in ta] == [(e["type"], e["task_sequence"]) for e in tb]
        assert [e["type"] for e in ta] == ["task.created", "task.ready", "run.queued"]
    for task, runs in zip(items, (1, 0, 0, 0, 0, 1), strict=True):
        assert len(ok(api.get(f"/v1/tasks/{task['id']}/runs"))["items"]) == runs, task["title"]

    # The batch's tasks are claimable, and their events continue their own sequences.
    claims = ok(api.post("/v1/queues/bq/claim", json={"worker": WORKER, "limit": 10}))["claims"]
    assert {c["task"]["id"] for c in claims} == {items[0]["id"], single["id"]}
    timeline = ok(api.get(f"/v1/tasks/{items[0]['id']}/timeline"))["items"]
    assert [e["task_sequence"] for e in timeline] == [1, 2, 3, 4, 5]


def test_batch_create_is_all_or_nothing_and_names_the_item(api: httpx.Client) -> None:
    before = ok(api.get("/v1/tasks", params={"count": "true", "limit": 1}))["total"]
    response = api.post("/v1/tasks/batch", json={"tasks": [{"title": "fine"}, {"title": ""}]})
    assert response.status_code == 422, response.text
    assert any(e["field"].startswith("tasks.1.title") for e in response.json()["errors"])
    response = api.post(
        "/v1/tasks/batch", json={"tasks": [{"title": "fine"}, {"title": "child", "parent_task_id": "task_nope"}]}
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["tasks.1.parent_task_id"]
    assert ok(api.get("/v1/tasks", params={"count": "true", "limit": 1}))["total"] == before
    assert api.post("/v1/tasks/batch", json={"tasks": []}).status_code == 422


def test_batch_create_with_dependencies_and_idempotency(api: httpx.Client) -> None:
    first = ok(api.post("/v1/tasks", json={"title": "first", "queue": "dq"}), 201)
    body = {
        "tasks": [{"title": "after", "queue": "dq", "depends_on": [first["id"]]}, {"title": "plain", "queue": "dq"}]
    }
    headers = {"Idempotency-Key": "batch-1"}
    items = ok(api.post("/v1/tasks/batch", json=body, headers=headers), 201)["items"]
    again = ok(api.post("/v1/tasks/batch", json=body, headers=headers), 201)["items"]
    assert [t["id"] for t in again] == [t["id"] for t in items]
    assert items[0]["status"] == "blocked" and items[0]["depends_on"] == [first["id"]]
    assert items[1]["status"] == "ready"


def test_batch_complete_each_run_on_its_own(api: httpx.Client) -> None:
    created = ok(
        api.post("/v1/tasks/batch", json={"tasks": [{"title": f"t{i}", "queue": "cq"} for i in range(4)]}), 201
    )["items"]
    claims = ok(api.post("/v1/queues/cq/claim", json={"worker": WORKER, "limit": 4}))["claims"]
    assert len(claims) == 4
    # Released with its token: that token no longer holds the run.
    released = claims[3]
    ok(api.post(f"/v1/runs/{released['run']['id']}/release", json={"claim_token": released["claim_token"]}))
    body = {
        "runs": [
            {"run_id": claims[0]["run"]["id"], "claim_token": claims[0]["claim_token"], "result": {"ok": 0}},
            {"run_id": claims[1]["run"]["id"], "claim_token": "clm_wrong"},
            {"run_id": claims[2]["run"]["id"], "claim_token": claims[2]["claim_token"], "result": [2]},
            {"run_id": released["run"]["id"], "claim_token": released["claim_token"], "result": "late"},
            {"run_id": "run_missing", "claim_token": "clm_x"},
        ]
    }
    items = ok(api.post("/v1/runs/complete", json=body))["items"]
    assert [i["run_id"] for i in items] == [r["run_id"] for r in body["runs"]]
    assert items[0] == {"run_id": claims[0]["run"]["id"], "status": "completed"}
    assert items[2] == {"run_id": claims[2]["run"]["id"], "status": "completed"}
    assert items[1]["error"]["type"].endswith("/stale-claim") and items[1]["error"]["status"] == 409
    assert items[3]["error"]["type"].endswith("/stale-claim")
    assert items[4]["error"]["status"] == 404
    by_id = {t["id"]: t for t in created}
    for claim, expected in ((claims[0], {"ok": 0}), (claims[2], [2])):
        task = ok(api.get(f"/v1/tasks/{claim['task']['id']}"))
        assert task["status"] == "completed" and task["output"] == expected
        assert by_id[task["id"]]
    assert ok(api.get(f"/v1/tasks/{claims[1]['task']['id']}"))["status"] == "in_progress"
    late = ok(api.get(f"/v1/tasks/{released['task']['id']}/timeline"))["items"]
    assert "run.late_result" in [e["type"] for e in late]
    # A repeat is refused for the ones already done, and still completes the one whose token was right.
    again = ok(
        api.post(
            "/v1/runs/complete",
            json={
                "runs": [{"run_id": claims[1]["run"]["id"], "claim_token": claims[1]["claim_token"]}, body["runs"][0]]
            },
        )
    )["items"]
    assert again[0]["status"] == "completed"
    assert again[1]["error"]["type"].endswith("/stale-claim")


def test_batch_start_each_run_on_its_own(api: httpx.Client) -> None:
    ok(api.post("/v1/tasks/batch", json={"tasks": [{"title": f"s{i}", "queue": "sq"} for i in range(3)]}), 201)
    claims = ok(api.post("/v1/queues/sq/claim", json={"worker": WORKER, "limit": 3}))["claims"]
    released = claims[2]
    ok(api.post(f"/v1/runs/{released['run']['id']}/release", json={"claim_token": released["claim_token"]}))
    body = {
        "runs": [
            {"run_id": c["run"]["id"], "claim_token": t}
            for c, t in (
                (claims[0], claims[0]["claim_token"]),
                (claims[1], "clm_wrong"),
                (released, released["claim_token"]),
            )
        ]
        + [{"run_id": "run_missing", "claim_token": "clm_x"}]
    }
    items = ok(api.post("/v1/runs/start", json=body))["items"]

    assert items[0] == {"run_id": claims[0]["run"]["id"], "status": "running"}
    assert items[1]["error"]["type"].endswith("/stale-claim") and items[1]["error"]["status"] == 409
    assert items[2]["error"]["type"].endswith("/stale-claim")
    assert items[3]["error"]["status"] == 404
    assert ok(api.get(f"/v1/runs/{claims[0]['run']['id']}"))["status"] == "running"
    assert ok(api.get(f"/v1/runs/{claims[1]['run']['id']}"))["status"] == "claimed"
    # Again: a run already running is given back as it is.
    again = ok(api.post("/v1/runs/start", json={"runs": body["runs"][:1]}))["items"]
    assert again == items[:1]


def test_batch_heartbeat_renews_each_lease_on_its_own(api: httpx.Client) -> None:
    ok(api.post("/v1/tasks/batch", json={"tasks": [{"title": f"h{i}", "queue": "hq"} for i in range(2)]}), 201)
    claims = ok(api.post("/v1/queues/hq/claim", json={"worker": WORKER, "limit": 2, "lease_seconds": 60}))["claims"]
    body = {
        "runs": [
            {"run_id": claims[0]["run"]["id"], "claim_token": claims[0]["claim_token"], "extend_seconds": 900,
             "progress": {"pct": 10}},
            {"run_id": claims[1]["run"]["id"], "claim_token": "clm_wrong"},
        ]
    }  # fmt: skip
    items = ok(api.post("/v1/runs/heartbeat", json=body))["items"]

    run = ok(api.get(f"/v1/runs/{claims[0]['run']['id']}"))
    assert items[0] == {"run_id": run["id"], "status": "claimed", "lease_until": run["lease_until"]}
    assert run["progress"] == {"pct": 10} and run["lease_until"] > claims[0]["lease_until"]
    assert items[1]["error"]["type"].endswith("/stale-claim")
    assert ok(api.get(f"/v1/runs/{claims[1]['run']['id']}"))["lease_until"] == claims[1]["lease_until"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (path, {"runs": []}, "runs")
        for path in ("/v1/runs/start", "/v1/runs/heartbeat")
    ]
    + [
        ("/v1/runs/start", {"runs": [{"run_id": "run_x"}]}, "runs.0.claim_token"),
        ("/v1/runs/start", {"runs": [{"run_id": "run_x", "claim_token": "clm_x", "result": 1}]}, "runs.0.result"),
        ("/v1/runs/start", {"runs": [{"run_id": "run_x", "claim_token": "clm_x"}] * 1001}, "runs"),
        ("/v1/runs/heartbeat", {"runs": [{"claim_token": "clm_x"}]}, "runs.0.run_id"),
        ("/v1/runs/heartbeat", {"runs": [{"run_id": "run_x", "claim_token": "clm_x", "extend_seconds": 0}]},
         "runs.0.extend_seconds"),
        ("/v1/runs/heartbeat", {"runs": [{"run_id": "run_x", "claim_token": "clm_x"}] * 1001}, "runs"),
    ],
)  # fmt: skip
def test_batch_start_and_heartbeat_name_what_is_wrong(
    api: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
