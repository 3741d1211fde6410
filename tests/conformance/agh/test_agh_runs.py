"""AGH task runs: list and enqueue a task's runs, and one run's claim, session, start, complete, fail,
cancel and detail — as an operator (a person's key) would call them."""

from __future__ import annotations

import re

import httpx
from agh_check import AGH

CREATE = "POST /api/tasks"
RUNS = "GET /api/tasks/{id}/runs"
ENQUEUE = "POST /api/tasks/{id}/runs"
RUN = "GET /api/task-runs/{id}"
CLAIM = "POST /api/task-runs/{id}/claim"
ATTACH = "POST /api/task-runs/{id}/attach-session"
START = "POST /api/task-runs/{id}/start"
COMPLETE = "POST /api/task-runs/{id}/complete"
FAIL = "POST /api/task-runs/{id}/fail"
CANCEL = "POST /api/task-runs/{id}/cancel"
MISSING = "run_does_not_exist"


def test_a_run_from_claim_to_completion(operator: AGH) -> None:
    task = operator.call(CREATE, json={"title": "index the docs", "network_channel": "runs"}, status=201)["task"]
    listed = operator.call(RUNS, {"id": task["id"]})["runs"]
    assert [r["status"] for r in listed] == ["queued"]
    run_id = listed[0]["id"]
    assert listed[0]["origin"]["kind"] == "http"
    operator.refused(RUNS, {"id": "task_does_not_exist"}, status=404)
    operator.refused(RUNS, {"id": task["id"]}, params={"status": "sleeping"}, status=400)
    operator.refused(START, {"id": run_id}, json={}, status=409)  # nobody holds a queued run

    claim = {"idempotency_key": "claim-once"}
    claimed = operator.call(CLAIM, {"id": run_id}, json=claim)["run"]
    assert claimed["status"] == "claimed"
    assert claimed["claimed_by"]["kind"] == "human"
    assert claimed["idempotency_key"] == "claim-once"
    assert re.fullmatch(r"[0-9a-f]{64}", claimed["claim_token_hash"])
    assert "claim_token" not in claimed
    assert operator.call(CLAIM, {"id": run_id}, json=claim)["run"] == claimed  # a retried claim: same answer
    operator.refused(CLAIM, {"id": run_id}, json={}, status=409)
    operator.refused(CLAIM, {"id": MISSING}, json={}, status=404)

    attached = operator.call(ATTACH, {"id": run_id}, json={"session_id": "sess-42"})["run"]
    assert (attached["status"], attached["session_id"]) == ("starting", "sess-42")
    operator.refused(ATTACH, {"id": run_id}, json={}, status=400)
    operator.refused(ATTACH, {"id": MISSING}, json={"session_id": "s"}, status=404)

    running = operator.call(START, {"id": run_id}, json={"idempotency_key": "start-once"})["run"]
    assert running["status"] == "running"
    assert running["started_at"] is not None

    assert operator.call(RUNS, {"id": task["id"]}, params={"session_id": "sess-42"})["runs"][0]["id"] == run_id
    assert operator.call(RUNS, {"id": task["id"]}, params={"status": "completed"})["runs"] == []

    usage = {"input_tokens": 120, "output_tokens": 30, "total_cost": 0.02, "cost_currency": "USD"}
    done = operator.call(COMPLETE, {"id": run_id}, json={"result": {"pages": 12}, "usage": usage})["run"]
    assert (done["status"], done["result"]) == ("completed", {"pages": 12})
    operator.refused(COMPLETE, {"id": run_id}, json={}, status=409)

    detail = operator.call(RUN, {"id": run_id})["run"]
    assert detail["run"]["id"] == run_id
    assert detail["task"]["status"] == "completed"
    assert detail["session"]["session_id"] == "sess-42"
    assert (detail["summary"]["input_tokens"], detail["summary"]["total_tokens"]) == (120, 150)
    assert detail["summary"]["last_event_type"] in ("run.completed", "task.completed")
    assert detail["summary"]["last_activity_at"] is not None
    operator.refused(RUN, {"id": MISSING}, status=404)


def test_failing_canceling_and_enqueueing_runs(operator: AGH, native: httpx.Client) -> None:
    # A retry waits an hour here, so the task is still waiting for it whenever the test looks.
    queue = {"name": "retries", "initial_interval_seconds": 3600, "max_interval_seconds": 3600}
    assert native.post("/v1/queues", json=queue).status_code == 201
    task = operator.call(CREATE, json={"title": "flaky", "network_channel": "retries"}, status=201)["task"]
    first = operator.call(RUNS, {"id": task["id"]})["runs"][0]["id"]
    operator.call(CLAIM, {"id": first}, json={})
    failed = operator.call(FAIL, {"id": first}, json={"error": "timeout talking to the model"})["run"]
    assert (failed["status"], failed["error"]) == ("failed", "timeout talking to the model")
    operator.refused(FAIL, {"id": first}, json={}, status=400)  # the error text is required
    operator.refused(FAIL, {"id": MISSING}, json={"error": "x"}, status=404)

    # The failure queued a retry after the queue's backoff: the task waits, "pending".
    retry = next(r for r in operator.call(RUNS, {"id": task["id"]})["runs"] if r["status"] == "queued")
    assert operator.call("GET /api/tasks/{id}", {"id": task["id"]})["task"]["task"]["status"] == "pending"
    canceled = operator.call(CANCEL, {"id": retry["id"]}, json={})["run"]
    assert canceled["status"] == "canceled"
    operator.refused(CANCEL, {"id": retry["id"]}, json={}, status=409)
    operator.refused(CANCEL, {"id": MISSING}, json={}, status=404)

    again = operator.call(ENQUEUE, {"id": task["id"]}, json={"idempotency_key": "one-more"}, status=201)["run"]
    assert (again["status"], again["idempotency_key"]) == ("queued", "one-more")
    operator.refused(ENQUEUE, {"id": task["id"]}, json={}, status=409)  # it has an active run now
    operator.refused(ENQUEUE, {"id": "task_does_not_exist"}, json={}, status=404)
    statuses = [r["status"] for r in operator.call(RUNS, {"id": task["id"]})["runs"]]
    assert sorted(statuses) == ["canceled", "failed", "queued"]
    assert len(operator.call(RUNS, {"id": task["id"]}, params={"limit": 2})["runs"]) == 2
