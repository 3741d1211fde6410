"""Completing a run and claiming the next in one request (``claim_next``): one commit per task for a worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
from serverproc import ServerProcess, metric, poll

WORKER = {"kind": "automation", "ref": "loop-worker"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    return response.json()


def _fill(api: httpx.Client, queue: str, count: int) -> list[str]:
    ok(api.post("/v1/queues", json={"name": queue}), 201)
    tasks = [{"title": f"t{i}", "queue": queue, "data": {"n": i}} for i in range(count)]
    return [t["id"] for t in ok(api.post("/v1/tasks/batch", json={"tasks": tasks}), 201)["items"]]


def test_complete_claims_the_next_runs_of_the_queue_for_the_same_worker(api: httpx.Client) -> None:
    _fill(api, "loop", 3)
    (first,) = ok(api.post("/v1/queues/loop/claim", json={"worker": WORKER}))["claims"]

    body = {"claim_token": first["claim_token"], "result": {"ok": 1}, "claim_next": {"limit": 5, "lease_seconds": 60}}
    answer = ok(api.post(f"/v1/runs/{first['run']['id']}/complete", json=body))
    assert answer["run"]["status"] == "completed"
    assert answer["run"]["id"] == first["run"]["id"]
    nxt = answer["claims"]
    assert len(nxt) == 2  # what was left in the queue, not the limit
    for claim in nxt:
        assert claim["run"]["claimed_by"] == WORKER
        assert claim["run"]["status"] == "claimed"
        assert claim["task"]["status"] == "in_progress"

    # The first task is done with its events in order; each next claim's token holds its run.
    task = ok(api.get(f"/v1/tasks/{first['task']['id']}"))
    assert task["status"] == "completed" and task["output"] == {"ok": 1}
    timeline = ok(api.get(f"/v1/tasks/{first['task']['id']}/timeline"))["items"]
    assert [e["type"] for e in timeline][-2:] == ["run.completed", "task.completed"]
    assert [e["task_sequence"] for e in timeline] == list(range(1, len(timeline) + 1))
    last = nxt[-1]
    body = {"claim_token": last["claim_token"], "claim_next": {}}
    answer = ok(api.post(f"/v1/runs/{last['run']['id']}/complete", json=body))
    assert answer["claims"] == []  # nothing claimable now: no waiting, an empty list
    ok(api.post(f"/v1/runs/{nxt[0]['run']['id']}/complete", json={"claim_token": nxt[0]["claim_token"]}))
    assert ok(api.get("/v1/tasks", params={"queue": "loop", "status": "completed", "count": "true"}))["total"] == 3


def test_a_refused_completion_claims_nothing(api: httpx.Client) -> None:
    _fill(api, "refuse", 2)
    (claim,) = ok(api.post("/v1/queues/refuse/claim", json={"worker": WORKER}))["claims"]
    body = {"claim_token": "clm_not-the-token", "claim_next": {"limit": 1}}
    response = api.post(f"/v1/runs/{claim['run']['id']}/complete", json=body)
    assert response.status_code == 409, response.text
    # The other task is still there to claim: the refused call took nothing.
    assert len(ok(api.post("/v1/queues/refuse/claim", json={"worker": WORKER, "limit": 5}))["claims"]) == 1


def test_batch_completion_claims_from_the_named_queue(api: httpx.Client) -> None:
    _fill(api, "bloop", 5)
    claims = ok(api.post("/v1/queues/bloop/claim", json={"worker": WORKER, "limit": 2}))["claims"]
    body = {
        "runs": [{"run_id": c["run"]["id"], "claim_token": c["claim_token"]} for c in claims],
        "claim_next": {"queue": "bloop", "worker": WORKER, "limit": 2},
    }
    answer = ok(api.post("/v1/runs/complete", json=body))
    assert [i["status"] for i in answer["items"]] == ["completed", "completed"]
    assert len(answer["claims"]) == 2
    assert {c["task"]["id"] for c in answer["claims"]}.isdisjoint({c["task"]["id"] for c in claims})


def test_claim_next_is_validated(api: httpx.Client) -> None:
    _fill(api, "valid", 1)
    (claim,) = ok(api.post("/v1/queues/valid/claim", json={"worker": WORKER}))["claims"]
    run_id, token = claim["run"]["id"], claim["claim_token"]
    single = f"/v1/runs/{run_id}/complete"
    batch = {"runs": [{"run_id": run_id, "claim_token": token}]}
    refused = [
        (single, {"claim_token": token, "claim_next": {"limit": 0}}, "claim_next.limit"),
        (single, {"claim_token": token, "claim_next": {"wait_seconds": 31}}, "claim_next.wait_seconds"),
        ("/v1/runs/complete", {**batch, "claim_next": {"queue": "valid", "worker": WORKER, "wait_seconds": -1}},
         "claim_next.wait_seconds"),
    ]  # fmt: skip
    for path, body, field in refused:
        response = api.post(path, json=body)
        assert response.status_code == 422
        assert any(e["field"] == field for e in response.json()["errors"]), response.text
        # Nothing changed: the run is still held.
        assert ok(api.get(f"/v1/runs/{run_id}"))["status"] == "claimed"


def test_runs_claimed_together_hold_distinct_tokens_each_good_for_its_own_run_only(api: httpx.Client) -> None:
    _fill(api, "tokens", 3)
    claims = ok(api.post("/v1/queues/tokens/claim", json={"worker": WORKER, "limit": 3}))["claims"]
    assert len({c["claim_token"] for c in claims}) == 3
    first, second = claims[0], claims[1]
    wrong = api.post(f"/v1/runs/{first['run']['id']}/complete", json={"claim_token": second["claim_token"]})
    assert wrong.status_code == 409, wrong.text
    for claim in claims:
        done = ok(api.post(f"/v1/runs/{claim['run']['id']}/complete", json={"claim_token": claim["claim_token"]}))
        assert done["status"] == "completed"


def test_a_completion_waits_for_the_next_task_and_is_handed_it(start_server: Callable[..., ServerProcess]) -> None:
    """A worker's whole loop in one request: the completion commits, then waits for the next (a long-poll),
    and a task created meanwhile is handed to it; under an Idempotency-Key its repeat gets the same answer."""
    server = start_server(WORKLOOM_CLAIM_POLL_SECONDS="60")  # waiting, it is seen so until handed something
    with server.client() as api:
        _waits_and_is_handed(server, api, "waits", {})
        _waits_and_is_handed(server, api, "waits-keyed", {"Idempotency-Key": "loop-complete-1"})


def _waits_and_is_handed(server: ServerProcess, api: httpx.Client, queue: str, headers: dict[str, str]) -> None:
    _fill(api, queue, 1)
    (first,) = ok(api.post(f"/v1/queues/{queue}/claim", json={"worker": WORKER}))["claims"]
    body = {"claim_token": first["claim_token"], "claim_next": {"wait_seconds": 20}}
    answers: list[httpx.Response] = []

    def complete() -> None:
        with server.client(timeout=30) as worker:
            answers.append(worker.post(f"/v1/runs/{first['run']['id']}/complete", json=body, headers=headers))

    waiting = threading.Thread(target=complete)
    waiting.start()
    poll(lambda: metric(api, "workloom_claimers_waiting") >= 1, "the completion to wait", 10)
    # Committed before it waits: the task is done while its worker waits for the next.
    assert ok(api.get(f"/v1/tasks/{first['task']['id']}"))["status"] == "completed"

    created = ok(api.post("/v1/tasks", json={"title": "next", "queue": queue}), 201)
    waiting.join(timeout=10)
    answer = ok(answers[0])
    assert answer["run"]["id"] == first["run"]["id"] and answer["run"]["status"] == "completed"
    (claim,) = answer["claims"]
    assert claim["task"]["id"] == created["id"] and claim["run"]["claimed_by"] == WORKER
    if headers:  # the answer lost on the way, say: the repeat gets it again and claims nothing more
        ok(api.post("/v1/tasks", json={"title": "not for the repeat", "queue": queue}), 201)
        repeated = api.post(f"/v1/runs/{first['run']['id']}/complete", json=body, headers=headers)
        assert ok(repeated) == answer


def test_a_completion_that_waits_for_nothing_answers_when_its_wait_is_over(api: httpx.Client) -> None:
    _fill(api, "idle", 1)
    (first,) = ok(api.post("/v1/queues/idle/claim", json={"worker": WORKER}))["claims"]
    body = {"claim_token": first["claim_token"], "claim_next": {"wait_seconds": 0.3}}
    answer = ok(api.post(f"/v1/runs/{first['run']['id']}/complete", json=body))
    assert answer["run"]["status"] == "completed" and answer["claims"] == []


def test_a_batch_completion_waits_for_the_next_runs_of_its_queue(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(WORKLOOM_CLAIM_POLL_SECONDS="60")
    with server.client() as api:
        _fill(api, "bwait", 2)
        claims = ok(api.post("/v1/queues/bwait/claim", json={"worker": WORKER, "limit": 2}))["claims"]
        body = {
            "runs": [{"run_id": c["run"]["id"], "claim_token": c["claim_token"]} for c in claims],
            "claim_next": {"queue": "bwait", "worker": WORKER, "limit": 10, "wait_seconds": 20},
        }
        answers: list[httpx.Response] = []

        def complete() -> None:
            with server.client(timeout=30) as worker:
                answers.append(worker.post("/v1/runs/complete", json=body, headers={"Idempotency-Key": "batch-1"}))

        waiting = threading.Thread(target=complete)
        waiting.start()
        poll(lambda: metric(api, "workloom_claimers_waiting") >= 1, "the batch completion to wait", 10)
        created = ok(api.post("/v1/tasks", json={"title": "next", "queue": "bwait"}), 201)
        waiting.join(timeout=10)
        answer = ok(answers[0])
        assert [i["status"] for i in answer["items"]] == ["completed", "completed"]
        assert [c["task"]["id"] for c in answer["claims"]] == [created["id"]]
        repeated = api.post("/v1/runs/complete", json=body, headers={"Idempotency-Key": "batch-1"})
        assert ok(repeated) == answer


def test_claims_that_start_come_back_running_from_every_claiming_call(api: httpx.Client) -> None:
    """``start``: a worker that begins its handlers as its claims arrive has its runs running in the claim
    itself (a queue's claim, a completion's ``claim_next``, a batch completion's), events as a start's."""
    _fill(api, "go", 4)

    def started(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for claim in claims:
            assert claim["run"]["status"] == "running" and claim["run"]["started_at"] is not None, claim["run"]
            assert ok(api.get(f"/v1/runs/{claim['run']['id']}"))["status"] == "running"
            timeline = ok(api.get(f"/v1/tasks/{claim['task']['id']}/timeline"))["items"]
            assert [e["type"] for e in timeline][-3:] == ["run.claimed", "task.in_progress", "run.started"]
            assert [e["task_sequence"] for e in timeline] == list(range(1, len(timeline) + 1))
        return claims

    (first,) = started(ok(api.post("/v1/queues/go/claim", json={"worker": WORKER, "start": True}))["claims"])

    body = {"claim_token": first["claim_token"], "claim_next": {"limit": 1, "start": True}}
    (second,) = started(ok(api.post(f"/v1/runs/{first['run']['id']}/complete", json=body))["claims"])

    batch = {
        "runs": [{"run_id": second["run"]["id"], "claim_token": second["claim_token"]}],
        "claim_next": {"queue": "go", "worker": WORKER, "limit": 5, "start": True},
    }
    answer = ok(api.post("/v1/runs/complete", json=batch))
    assert answer["items"] == [{"run_id": second["run"]["id"], "status": "completed"}]
    rest = started(answer["claims"])
    assert len(rest) == 2
    # Started already, a start sent anyway gives the runs back as they are.
    starts = {"runs": [{"run_id": c["run"]["id"], "claim_token": c["claim_token"]} for c in rest]}
    assert [item["status"] for item in ok(api.post("/v1/runs/start", json=starts))["items"]] == ["running"] * 2
