"""AGH views: a task's timeline, its SSE stream (replay, live events, keep-alives, resume) and its tree;
the observer dashboard, the inbox and its triage marks."""

from __future__ import annotations

import time
from collections.abc import Callable

from agh_check import AGH, filled

CREATE = "POST /api/tasks"
CHILDREN = "POST /api/tasks/{id}/children"
PATCH = "PATCH /api/tasks/{id}"
TIMELINE = "GET /api/tasks/{id}/timeline"
STREAM = "GET /api/tasks/{id}/stream"
TREE = "GET /api/tasks/{id}/tree"
DASHBOARD = "GET /api/observe/tasks/dashboard"
INBOX = "GET /api/observe/tasks/inbox"
READ = "POST /api/tasks/{id}/triage/read"
DISMISS = "POST /api/tasks/{id}/triage/dismiss"
ARCHIVE = "POST /api/tasks/{id}/triage/archive"
CLAIM_NEXT = "POST /api/agent/tasks/claim-next"
MISSING = "task_does_not_exist"


def test_timeline_stream_and_tree(operator: AGH) -> None:
    root = operator.call(CREATE, json={"title": "release 2.0", "network_channel": "views"}, status=201)["task"]
    child = operator.call(CHILDREN, {"id": root["id"]}, json={"title": "changelog"}, status=201)["task"]
    grandchild = operator.call(CHILDREN, {"id": child["id"]}, json={"title": "collect PRs"}, status=201)["task"]
    operator.call(CHILDREN, {"id": root["id"]}, json={"title": "announce"}, status=201)

    tree = operator.call(TREE, {"id": root["id"]})["tree"]
    assert (tree["root"]["task"]["id"], tree["root"]["depth"], tree["root"]["child_count"]) == (root["id"], 0, 2)
    assert tree["root"]["active_run"]["status"] == "queued"
    depths = {node["task"]["id"]: node["depth"] for node in tree["descendants"]}
    assert depths[child["id"]] == 1
    assert depths[grandchild["id"]] == 2
    assert len(depths) == 3
    operator.refused(TREE, {"id": MISSING}, status=404)

    timeline = operator.call(TIMELINE, {"id": root["id"]})["timeline"]
    assert [item["sequence"] for item in timeline] == list(range(1, len(timeline) + 1))
    assert timeline[0]["event_type"] == "task.created"
    assert any(item["run"] is not None for item in timeline)  # run.queued shows its run
    later = operator.call(TIMELINE, {"id": root["id"]}, params={"after_sequence": 1})["timeline"]
    assert [item["sequence"] for item in later] == [item["sequence"] for item in timeline[1:]]
    assert len(operator.call(TIMELINE, {"id": root["id"]}, params={"limit": 1})["timeline"]) == 1
    operator.refused(TIMELINE, {"id": MISSING}, status=404)
    operator.refused(TIMELINE, {"id": root["id"]}, params={"after_sequence": -1}, status=400)

    last = timeline[-1]["sequence"]
    with operator.stream(STREAM, {"id": root["id"]}) as stream:
        replayed = stream.until(lambda m: m.data["sequence"] == last)
        assert [m.data["sequence"] for m in replayed] == list(range(1, last + 1))
        assert all(m.id == str(m.data["sequence"]) for m in replayed)
        assert replayed[0].data["type"] == "task.created"
        assert replayed[0].event == "message"  # the default name: EventSource.onmessage sees every message
        operator.call(PATCH, {"id": root["id"]}, json={"title": "release 2.0.1"})
        live = stream.until(lambda m: m.data["type"] == "task.updated")
        assert live[-1].data["timeline"]["task"]["title"] == "release 2.0.1"
        assert live[-1].data["sequence"] == last + 1
    with operator.stream(STREAM, {"id": root["id"]}, params={"after_sequence": last}) as resumed:
        assert [m.data["sequence"] for m in resumed.until(lambda m: True)] == [last + 1]
    with operator.stream(STREAM, {"id": root["id"]}, headers={"last-event-id": str(last + 1)}) as quiet:
        operator.call(PATCH, {"id": root["id"]}, json={"priority": "high"})
        assert quiet.until(lambda m: True)[0].data["sequence"] == last + 2
        assert "connected" in quiet.comments
    operator.refused(STREAM, {"id": MISSING}, status=404)


def test_keep_alives_on_a_quiet_stream(operator: AGH) -> None:
    task = operator.call(CREATE, json={"title": "quiet"}, status=201)["task"]
    seen = len(operator.call(TIMELINE, {"id": task["id"]})["timeline"])
    with operator.stream(STREAM, {"id": task["id"]}, params={"after_sequence": seen}) as stream:
        assert stream.next(time.monotonic() + 3.0) is None  # nothing new: only comments arrive
        assert "keep-alive" in stream.comments


def test_dashboard_inbox_and_triage(operator: AGH, agent_client: Callable[[], AGH]) -> None:
    agent = agent_client()
    mine = operator.call(
        CREATE, json={"title": "review the plan", "owner": {"kind": "human", "ref": "bootstrap"}}, status=201
    )["task"]
    gated = operator.call(CREATE, json={"title": "ship it", "approval_policy": "required"}, status=201)["task"]
    claimed = operator.call(CREATE, json={"title": "crunch", "network_channel": "busy"}, status=201)["task"]
    agent.call(CLAIM_NEXT, json={"network_channel": "busy"})

    board = operator.call(DASHBOARD)["dashboard"]
    filled(board, "status_breakdown", "active_runs.items", "queue.depth")
    totals = board["totals"]
    assert totals["tasks_total"] == 3
    assert (totals["blocked_tasks"], totals["awaiting_approval_tasks"], totals["in_progress_tasks"]) == (1, 1, 1)
    assert totals["claimed_runs"] == 1
    assert [s["status"] for s in board["status_breakdown"]] == [
        "draft", "pending", "blocked", "ready", "in_progress", "completed", "failed", "canceled",
    ]  # fmt: skip
    assert sum(s["count"] for s in board["status_breakdown"]) == 3
    busy = next(item for item in board["active_runs"]["items"] if item["task_id"] == claimed["id"])
    assert (busy["run_status"], busy["network_channel"], busy["stuck"]) == ("claimed", "busy", False)
    assert {d["network_channel"] for d in board["queue"]["depth"]} == {"default"}
    narrowed = operator.call(DASHBOARD, params={"network_channel": "busy", "owner_kind": "human", "scope": "workspace"})
    assert narrowed["dashboard"]["totals"]["tasks_total"] == 0  # the busy task has no owner
    assert (
        operator.call(DASHBOARD, params={"origin_kind": "http", "workspace": "default"})["dashboard"]["totals"][
            "tasks_total"
        ]
        == 3
    )
    operator.refused(DASHBOARD, params={"origin_kind": "carrier-pigeon"}, status=400)
    operator.refused(DASHBOARD, params={"workspace": "elsewhere"}, status=404)

    inbox = operator.call(INBOX)["inbox"]
    lanes = {group["lane"]: group for group in inbox["groups"]}
    assert list(lanes) == ["my_work", "approvals", "failed_runs", "blocked", "archived"]
    assert [item["task"]["id"] for item in lanes["my_work"]["items"]] == [mine["id"]]
    assert [item["task"]["id"] for item in lanes["approvals"]["items"]] == [gated["id"]]
    assert lanes["approvals"]["items"][0]["blocking_reason"] == "approval"
    assert (inbox["total"], inbox["unread_total"], inbox["archived_total"]) == (2, 2, 0)
    filled(inbox, "groups", "groups[].items")
    assert operator.call(INBOX, params={"lane": "approvals"})["inbox"]["groups"][0]["lane"] == "approvals"
    assert operator.call(INBOX, params={"query": "nothing like this"})["inbox"]["total"] == 0
    operator.refused(INBOX, params={"lane": "someday"}, status=400)
    operator.refused(INBOX, params={"unread": "perhaps"}, status=400)

    read = operator.call(READ, {"id": mine["id"]})["triage"]
    assert (read["read"], read["dismissed"], read["archived"]) == (True, False, False)
    assert read["actor"]["kind"] == "human"
    unread = operator.call(INBOX, params={"unread": "true", "limit": 10})["inbox"]
    assert unread["unread_total"] == 1
    assert [i["task"]["id"] for g in unread["groups"] for i in g["items"]] == [gated["id"]]
    dismissed = operator.call(DISMISS, {"id": gated["id"]})["triage"]
    assert dismissed["dismissed"] is True
    archived = operator.call(ARCHIVE, {"id": mine["id"]})["triage"]
    assert archived["archived"] is True
    after = operator.call(INBOX)["inbox"]
    assert (after["total"], after["archived_total"]) == (0, 1)
    for action in (READ, DISMISS, ARCHIVE):
        operator.refused(action, {"id": MISSING}, status=404)
