"""AGH tasks: create, list with every documented filter, read, update, delete, children, and the
transitions (publish, approve, reject, start, cancel, dependencies) — each answer checked against the
seed document's example, each refusal against its error shape."""

from __future__ import annotations

from agh_check import AGH, filled
from agh_seed import operations

CREATE = "POST /api/tasks"
LIST = "GET /api/tasks"
GET = "GET /api/tasks/{id}"
PATCH = "PATCH /api/tasks/{id}"
DELETE = "DELETE /api/tasks/{id}"
CHILDREN = "POST /api/tasks/{id}/children"
PUBLISH = "POST /api/tasks/{id}/publish"
APPROVE = "POST /api/tasks/{id}/approve"
REJECT = "POST /api/tasks/{id}/reject"
START = "POST /api/tasks/{id}/start"
CANCEL = "POST /api/tasks/{id}/cancel"
ADD_DEPENDENCY = "POST /api/tasks/{id}/dependencies"
REMOVE_DEPENDENCY = "DELETE /api/tasks/{id}/dependencies/{depends_on_id}"
MISSING = "task_does_not_exist"


def ids(found: list[dict[str, object]]) -> set[object]:
    return {t["id"] for t in found}


def test_create_list_read_update_delete(operator: AGH) -> None:
    example = operations()[CREATE].request_example  # the document's own request: {"scope": "global", "title": …}
    plain = operator.call(CREATE, json=example, status=201)["task"]
    assert plain["title"] == example["title"]
    assert plain["scope"] == "global"
    assert plain["status"] == "ready"
    assert plain["network_channel"] == "default"

    draft = operator.call(
        CREATE,
        json={
            "title": "Summarize the incident",
            "description": "for the weekly report",
            "priority": "high",
            "draft": True,
            "owner": {"kind": "pool", "ref": "writers"},
            "network_channel": "reports",
            "metadata": {"source": "conformance"},
        },
        status=201,
    )["task"]
    assert (draft["status"], draft["draft"], draft["priority"], draft["scope"]) == ("draft", True, "high", "workspace")
    assert draft["owner"] == {"kind": "pool", "ref": "writers"}
    assert draft["created_by"]["kind"] == "human"
    assert draft["origin"]["kind"] == "http"

    child = operator.call(CHILDREN, {"id": plain["id"]}, json={"title": "a part of it"}, status=201)["task"]
    assert child["parent_task_id"] == plain["id"]
    operator.refused(CHILDREN, {"id": MISSING}, json={"title": "orphan"}, status=404)
    operator.refused(CREATE, json={"scope": "global"}, status=400)  # no title
    operator.refused(CREATE, json={"title": "x", "priority": "whenever"}, status=400)
    operator.refused(CREATE, json={"title": "x", "scope": "galaxy"}, status=400)
    response = operator.client.post(
        "/compat/agh/api/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    # Refused by the server before the dialect sees it: still the dialect's error shape.
    response = operator.client.post("/compat/agh/api/tasks", content=b"title=x", headers={"content-type": "text/plain"})
    assert (response.status_code, set(response.json())) == (415, {"error"})

    # Listing: drafts only on request; every documented filter narrows.
    listed = operator.call(LIST)["tasks"]
    assert ids(listed) == {plain["id"], child["id"]}
    with_drafts = operator.call(LIST, params={"include_drafts": "true"})
    assert ids(with_drafts["tasks"]) == {plain["id"], child["id"], draft["id"]}
    summary = next(t for t in with_drafts["tasks"] if t["id"] == plain["id"])
    assert summary["child_count"] == 1
    assert summary["active_run"]["status"] == "queued"
    assert summary["max_attempts"] == 3  # the queue's default, inherited
    filters = {
        "status": ("draft", {draft["id"]}),
        "priority": ("high", {draft["id"]}),
        "scope": ("global", {plain["id"]}),
        "approval_state": ("not_required", {plain["id"], child["id"], draft["id"]}),
        "owner_kind": ("pool", {draft["id"]}),
        "owner_ref": ("writers", {draft["id"]}),
        "parent_task_id": (plain["id"], {child["id"]}),
        "network_channel": ("reports", {draft["id"]}),
        "query": (draft["identifier"], {draft["id"]}),
        "workspace": ("default", {plain["id"], child["id"]}),
    }
    for name, (value, expected) in filters.items():
        found = operator.call(
            LIST, params={name: value, "include_drafts": "true"} if name != "workspace" else {name: value}
        )
        assert ids(found["tasks"]) == expected, name
    assert ids(operator.call(LIST, params={"status": "draft"})["tasks"]) == {draft["id"]}  # named: listed
    assert len(operator.call(LIST, params={"limit": 1})["tasks"]) == 1
    assert operator.call(LIST, params={"status": "completed"})["tasks"] == []
    operator.refused(LIST, params={"status": "done"}, status=400)
    operator.refused(LIST, params={"owner_kind": "robot"}, status=400)
    operator.refused(LIST, params={"limit": 0}, status=400)
    operator.refused(LIST, params={"workspace": "someone-else"}, status=404)

    # Detail, update, delete.
    detail = operator.call(GET, {"id": plain["id"]})["task"]
    assert detail["task"]["id"] == plain["id"]
    assert detail["summary"]["child_count"] == 1
    filled(detail, "children", "events", "runs")
    assert detail["events"][0]["event_type"] == "task.created"
    assert operator.call(GET, {"id": plain["identifier"]})["task"]["task"]["id"] == plain["id"]
    operator.refused(GET, {"id": MISSING}, status=404)

    changed = operator.call(
        PATCH, {"id": draft["id"]}, json={"title": "Summarize it", "priority": "urgent", "network_channel": "other"}
    )["task"]
    assert (changed["title"], changed["priority"], changed["network_channel"]) == ("Summarize it", "urgent", "other")
    assert operator.call(PATCH, {"id": draft["id"]}, json={"owner": None})["task"]["owner"] is None
    operator.refused(PATCH, {"id": draft["id"]}, json={"priority": "asap"}, status=400)
    operator.refused(PATCH, {"id": MISSING}, json={"title": "x"}, status=404)

    operator.refused(DELETE, {"id": plain["id"]}, status=409)  # it has a child
    assert operator.call(DELETE, {"id": child["id"]}, status=204) is None
    operator.refused(DELETE, {"id": child["id"]}, status=404)


def test_transitions_and_dependencies(operator: AGH) -> None:
    def create(**fields: object) -> dict[str, object]:
        return operator.call(CREATE, json={"title": "work", "network_channel": "transitions", **fields}, status=201)[
            "task"
        ]

    draft = create(draft=True)
    published = operator.call(PUBLISH, {"id": draft["id"]})
    assert published["task"]["status"] == "ready"
    assert published["run"]["status"] == "queued"
    assert published["run"]["network_channel"] == "transitions"
    operator.refused(PUBLISH, {"id": draft["id"]}, status=409)
    operator.refused(PUBLISH, {"id": MISSING}, status=404)

    gated = create(approval_policy="required")
    assert (gated["status"], gated["approval_state"]) == ("blocked", "pending")
    approved = operator.call(APPROVE, {"id": gated["id"]}, json={})
    assert (approved["task"]["status"], approved["task"]["approval_state"]) == ("ready", "approved")
    assert approved["run"]["status"] == "queued"
    operator.refused(APPROVE, {"id": gated["id"]}, json={}, status=409)

    refused = create(approval_policy="required")
    rejected = operator.call(REJECT, {"id": refused["id"]})["task"]
    assert (rejected["status"], rejected["approval_state"]) == ("canceled", "rejected")
    assert rejected["closed_at"] is not None
    operator.refused(REJECT, {"id": refused["id"]}, status=409)

    started = operator.call(START, {"id": published["task"]["id"]}, json={})
    assert started["run"]["id"] == published["run"]["id"]  # already enqueued: start asks for nothing new
    operator.refused(START, {"id": refused["id"]}, json={}, status=409)

    canceled = operator.call(CANCEL, {"id": approved["task"]["id"]}, json={})["task"]
    assert canceled["status"] == "canceled"
    operator.refused(CANCEL, {"id": approved["task"]["id"]}, json={}, status=409)
    operator.refused(CANCEL, {"id": MISSING}, json={}, status=404)

    first, then = create(), create()
    blocked = operator.call(ADD_DEPENDENCY, {"id": then["id"]}, json={"depends_on_task_id": first["id"]})["task"]
    assert blocked["task"]["status"] == "blocked"
    filled(blocked, "dependencies", "dependency_references", "summary.dependencies")
    assert blocked["dependency_references"][0]["depends_on"]["id"] == first["id"]
    assert blocked["summary"]["dependency_count"] == 1
    listed = operator.call(LIST, params={"status": "blocked"})
    filled(listed, "tasks", "tasks[].dependencies")
    operator.refused(ADD_DEPENDENCY, {"id": first["id"]}, json={"depends_on_task_id": then["id"]}, status=409)
    operator.refused(ADD_DEPENDENCY, {"id": then["id"]}, json={}, status=400)
    operator.refused(ADD_DEPENDENCY, {"id": MISSING}, json={"depends_on_task_id": first["id"]}, status=404)

    freed = operator.call(REMOVE_DEPENDENCY, {"id": then["id"], "depends_on_id": first["id"]})["task"]
    assert freed["task"]["status"] == "ready"
    assert freed["dependencies"] == []
    operator.refused(REMOVE_DEPENDENCY, {"id": then["id"], "depends_on_id": first["id"]}, status=404)
