"""A long-poll claim whose client has gone away claims nothing: the work stays for someone listening."""

from __future__ import annotations

import time

import httpx
import pytest
from serverproc import ServerProcess

WORKER = {"kind": "automation", "ref": "impatient"}


def test_a_claim_abandoned_by_its_client_does_not_take_work(server: ServerProcess, api: httpx.Client) -> None:
    assert api.post("/v1/queues", json={"name": "later"}).status_code == 201
    with server.client(timeout=1.0) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/queues/later/claim", json={"worker": WORKER, "wait_seconds": 20})
    task = api.post("/v1/tasks", json={"title": "arrives after the caller left", "queue": "later"}).json()
    # The abandoned request would have claimed it at once (its wake-up fires on creation); give the
    # server a few poll intervals to prove it did not, by watching the task stay claimable.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert api.get(f"/v1/tasks/{task['id']}").json()["status"] == "ready"
        time.sleep(0.2)  # sampling an observable condition over a bounded window
    claims = api.post("/v1/queues/later/claim", json={"worker": {"kind": "automation", "ref": "present"}})
    assert [c["task"]["id"] for c in claims.json()["claims"]] == [task["id"]]
