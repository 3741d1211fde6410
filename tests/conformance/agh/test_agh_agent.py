"""AGH agent endpoints: an agent known by its API key claims the next run, heartbeats, completes, fails or
releases it — only its own runs; another agent is refused with 409 and the document's error shape."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from agh_check import AGH

CLAIM_NEXT = "POST /api/agent/tasks/claim-next"
HEARTBEAT = "POST /api/agent/tasks/{run_id}/heartbeat"
COMPLETE = "POST /api/agent/tasks/{run_id}/complete"
FAIL = "POST /api/agent/tasks/{run_id}/fail"
RELEASE = "POST /api/agent/tasks/{run_id}/release"
CREATE = "POST /api/tasks"
MISSING = "run_does_not_exist"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_agent_works_only_its_own_runs(operator: AGH, agent_client: Callable[[], AGH]) -> None:
    agent, rival = agent_client(), agent_client()
    assert agent.call(CLAIM_NEXT, json={}, status=204) is None  # nothing to claim yet
    agent.refused(CLAIM_NEXT, json={"lease_seconds": "a while"}, status=400)

    task = operator.call(CREATE, json={"title": "triage logs", "network_channel": "agents"}, status=201)["task"]
    claim = agent.call(CLAIM_NEXT, json={})["claim"]
    run_id = claim["run"]["id"]
    assert claim["task"]["id"] == task["id"]
    assert claim["task"]["status"] == "in_progress"
    assert claim["run"]["status"] == claim["lease"]["status"] == "claimed"
    assert claim["lease"]["run_id"] == run_id
    assert claim["lease"]["claimed_by"]["kind"] == "agent_session"
    assert re.fullmatch(r"[0-9a-f]{64}", claim["lease"]["claim_token_hash"])
    assert "claim_token" not in str(claim).replace("claim_token_hash", "")
    assert rival.call(CLAIM_NEXT, json={}, status=204) is None  # the only run is taken

    beat = agent.call(HEARTBEAT, {"run_id": run_id}, json={"lease_seconds": 600})["lease"]
    assert at(beat["lease_until"]) > at(claim["lease"]["lease_until"])
    rival.refused(HEARTBEAT, {"run_id": run_id}, json={}, status=409)
    rival.refused(COMPLETE, {"run_id": run_id}, json={}, status=409)
    rival.refused(FAIL, {"run_id": run_id}, json={"error": "not mine"}, status=409)
    rival.refused(RELEASE, {"run_id": run_id}, json={}, status=409)
    agent.refused(HEARTBEAT, {"run_id": MISSING}, json={}, status=404)

    done = agent.call(COMPLETE, {"run_id": run_id}, json={"result": {"summary": "3 errors"}})["lease"]
    assert done["status"] == "completed"
    agent.refused(COMPLETE, {"run_id": run_id}, json={}, status=409)  # it is over
    agent.refused(HEARTBEAT, {"run_id": run_id}, json={}, status=409)

    # Failing: with one attempt allowed, the task fails with the run.
    operator.call(CREATE, json={"title": "once", "network_channel": "solo", "max_attempts": 1}, status=201)
    operator.call(CREATE, json={"title": "elsewhere", "network_channel": "other"}, status=201)
    solo = agent.call(CLAIM_NEXT, json={"network_channel": "solo"})["claim"]
    assert solo["run"]["network_channel"] == "solo"
    agent.refused(FAIL, {"run_id": solo["run"]["id"]}, json={}, status=400)
    failed = agent.call(FAIL, {"run_id": solo["run"]["id"]}, json={"error": "model refused"})["lease"]
    assert failed["status"] == "failed"
    assert operator.call("GET /api/tasks/{id}", {"id": solo["task"]["id"]})["task"]["task"]["status"] == "failed"
    agent.refused(FAIL, {"run_id": MISSING}, json={"error": "x"}, status=404)

    # Releasing gives the task back at once, without spending an attempt; someone else may take it.
    other = agent.call(CLAIM_NEXT, json={})["claim"]
    assert other["run"]["network_channel"] == "other"
    released = agent.call(RELEASE, {"run_id": other["run"]["id"]}, json={"reason": "shutting down"})["lease"]
    assert released["status"] == "canceled"
    retaken = rival.call(CLAIM_NEXT, json={})["claim"]
    assert retaken["task"]["id"] == other["task"]["id"]
    assert retaken["run"]["id"] != other["run"]["id"]
    assert retaken["run"]["attempt"] == other["run"]["attempt"]
    agent.refused(RELEASE, {"run_id": MISSING}, json={}, status=404)
    agent.refused(COMPLETE, {"run_id": MISSING}, json={}, status=404)

    # Malformed requests.
    response = agent.client.post(
        "/compat/agh/api/agent/tasks/claim-next", content=b"[", headers={"content-type": "application/json"}
    )
    assert (response.status_code, set(response.json())) == (400, {"error"})
    unauthenticated = agent.client.post(
        "/compat/agh/api/agent/tasks/claim-next", json={}, headers={"authorization": ""}
    )
    assert (unauthenticated.status_code, set(unauthenticated.json())) == (401, {"error"})
