"""Over HTTP: a long-poll claim is handed a task created while it waits, in the create's own commit."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
from serverproc import ServerProcess, metric, poll

WORKER = {"kind": "automation", "ref": "waiting"}


def test_a_long_poll_claim_is_handed_a_task_created_while_it_waits(
    start_server: Callable[..., ServerProcess],
) -> None:
    # No poll while it waits: once it is seen waiting, it stays so until woken or handed something.
    server = start_server(WORKLOOM_CLAIM_POLL_SECONDS="60")
    with server.client() as api:
        handed_over(server, api)
        handed_over_under_a_key(server, api)


def handed_over(server: ServerProcess, api: httpx.Client) -> None:
    assert api.post("/v1/queues", json={"name": "handed"}).status_code == 201
    answers: list[httpx.Response] = []

    def claim() -> None:
        with server.client(timeout=30) as worker:
            answers.append(worker.post("/v1/queues/handed/claim", json={"worker": WORKER, "wait_seconds": 20}))

    waiting = threading.Thread(target=claim)
    waiting.start()
    poll(lambda: metric(api, "workloom_claimers_waiting") >= 1, "the claim to wait", 10)

    created = api.post("/v1/tasks", json={"title": "for the waiting worker", "queue": "handed"})
    waiting.join(timeout=10)

    assert created.status_code == 201
    assert created.json()["status"] == "in_progress"  # claimed as the create committed
    (claim,) = answers[0].json()["claims"]
    assert claim["task"]["id"] == created.json()["id"]
    assert claim["run"]["claimed_by"] == WORKER
    assert metric(api, "workloom_handoffs_total") == 1
    assert metric(api, "workloom_claimers_waiting") == 0
    done = api.post(f"/v1/runs/{claim['run']['id']}/complete", json={"claim_token": claim["claim_token"]})
    assert done.status_code == 200
    assert api.get(f"/v1/tasks/{created.json()['id']}").json()["status"] == "completed"


def handed_over_under_a_key(server: ServerProcess, api: httpx.Client) -> None:
    """As the SDK's worker claims: under an Idempotency-Key, whose retry gets the claim handed over."""
    assert api.post("/v1/queues", json={"name": "keyed"}).status_code == 201
    body = {"worker": WORKER, "wait_seconds": 20}
    key = {"Idempotency-Key": "worker-claim-1"}
    answers: list[httpx.Response] = []

    def claim() -> None:
        with server.client(timeout=30) as worker:
            answers.append(worker.post("/v1/queues/keyed/claim", json=body, headers=key))

    waiting = threading.Thread(target=claim)
    waiting.start()
    poll(lambda: metric(api, "workloom_claimers_waiting") >= 1, "the keyed claim to wait", 10)

    created = api.post("/v1/tasks", json={"title": "for the keyed worker", "queue": "keyed"})
    waiting.join(timeout=10)

    assert created.json()["status"] == "in_progress"
    (claim,) = answers[0].json()["claims"]
    assert claim["task"]["id"] == created.json()["id"]
    assert metric(api, "workloom_handoffs_total") == 2
    # The answer was lost on the way, say: the retry gets the same claim back, and claims nothing more.
    api.post("/v1/tasks", json={"title": "not for the retry", "queue": "keyed"})
    retried = api.post("/v1/queues/keyed/claim", json=body, headers=key)
    assert retried.status_code == 200
    assert retried.json()["claims"] == answers[0].json()["claims"]
