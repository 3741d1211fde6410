"""One task, two APIs: created in the native API, claimed, heartbeated and completed by an agent through
the AGH dialect; one timeline seen the same from both sides, and the dashboard and inbox following."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from agh_check import AGH

DASHBOARD = "GET /api/observe/tasks/dashboard"
INBOX = "GET /api/observe/tasks/inbox"
TIMELINE = "GET /api/tasks/{id}/timeline"
CLAIM_NEXT = "POST /api/agent/tasks/claim-next"
HEARTBEAT = "POST /api/agent/tasks/{run_id}/heartbeat"
COMPLETE = "POST /api/agent/tasks/{run_id}/complete"
GET = "GET /api/tasks/{id}"


def counts(operator: AGH) -> dict[str, Any]:
    board = operator.call(DASHBOARD)["dashboard"]
    inbox = operator.call(INBOX)["inbox"]
    lanes = {group["lane"]: group["count"] for group in inbox["groups"]}
    return {
        **{
            name: board["totals"][name]
            for name in ("tasks_total", "ready_tasks", "in_progress_tasks", "completed_tasks")
        },
        **{name: board["totals"][name] for name in ("queued_runs", "claimed_runs", "completed_runs", "active_runs")},
        "queue_depth": board["queue"]["total"],
        "active_items": len(board["active_runs"]["items"]),
        "my_work": lanes["my_work"],
        "inbox_total": inbox["total"],
    }


def test_native_task_worked_by_an_agent_through_the_dialect(
    native: httpx.Client, operator: AGH, agent_client: Callable[[], AGH]
) -> None:
    agent = agent_client()
    before = counts(operator)
    assert before["tasks_total"] == before["inbox_total"] == 0

    created = native.post(
        "/v1/tasks",
        json={"title": "Draft the release notes", "queue": "writing", "owner": {"kind": "human", "ref": "bootstrap"}},
    )
    assert created.status_code == 201, created.text
    task = created.json()
    queued = counts(operator)
    assert queued == {
        **before,
        "tasks_total": 1,
        "ready_tasks": 1,
        "queued_runs": 1,
        "active_runs": 1,
        "queue_depth": 1,
        "active_items": 1,
        "my_work": 1,
        "inbox_total": 1,
    }

    claim = agent.call(CLAIM_NEXT, json={})["claim"]
    assert claim["task"]["id"] == task["id"]
    run_id = claim["run"]["id"]
    claimed = counts(operator)
    assert claimed == {
        **queued,
        "ready_tasks": 0,
        "in_progress_tasks": 1,
        "queued_runs": 0,
        "claimed_runs": 1,
        "queue_depth": 0,
    }

    agent.call(HEARTBEAT, {"run_id": run_id}, json={})
    assert native.get(f"/v1/runs/{run_id}").json()["heartbeat_at"] is not None
    agent.call(COMPLETE, {"run_id": run_id}, json={"result": {"notes": "v2.0: faster claims"}})

    done = counts(operator)
    assert done == {
        **claimed,
        "in_progress_tasks": 0,
        "completed_tasks": 1,
        "claimed_runs": 0,
        "completed_runs": 1,
        "active_runs": 0,
        "active_items": 0,
        "my_work": 0,
        "inbox_total": 0,
    }
    native_task = native.get(f"/v1/tasks/{task['id']}").json()
    assert (native_task["status"], native_task["output"]) == ("completed", {"notes": "v2.0: faster claims"})
    assert operator.call(GET, {"id": task["id"]})["task"]["task"]["status"] == "completed"

    # One timeline: the same events, in the same order, with the same numbers and actors, in both APIs.
    native_events = native.get(f"/v1/tasks/{task['id']}/timeline").json()["items"]
    agh_events = operator.call(TIMELINE, {"id": task["id"]})["timeline"]
    assert [(e["task_sequence"], e["type"], str(e["sequence"])) for e in native_events] == [
        (e["sequence"], e["event_type"], e["event_id"]) for e in agh_events
    ]
    assert [e["actor"] for e in native_events] == [e["actor"] for e in agh_events]
    kinds = [e["event_type"] for e in agh_events]
    assert kinds[0] == "task.created"
    assert kinds.index("run.claimed") < kinds.index("run.completed") < kinds.index("task.completed")
    claimed_event = agh_events[kinds.index("run.claimed")]
    assert claimed_event["actor"]["kind"] == "agent_session"
    assert claimed_event["run"]["id"] == run_id
