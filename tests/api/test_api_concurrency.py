"""Many claimers on one queue: every task is handed out once and completed once, across server processes.

The big scenario runs two server processes on one PostgreSQL database (claims race through
``SKIP LOCKED`` in two connection pools); the small one runs a single server on SQLite.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from serverproc import ServerProcess

DRAIN_DEADLINE = 90.0  # seconds; a generous bound (the 2,000-task drain takes 20-40 s on 2 busy cores)


@dataclass
class Ledger:
    """What the claimers observed, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    claimed: list[tuple[str, str, str]] = field(default_factory=list)  # (run id, task id, claimer)
    completed: list[str] = field(default_factory=list)  # run ids whose complete answered 200
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # (run id, status, body) of other answers
    server_errors: list[str] = field(default_factory=list)  # any 5xx, with where it happened
    claim_calls: int = 0
    abort: threading.Event = field(default_factory=threading.Event)  # a claimer failed: the others stop

    def note_5xx(self, where: str, response: httpx.Response) -> None:
        if response.status_code >= 500:
            with self.lock:
                self.server_errors.append(f"{where}: {response.status_code} {response.text[:300]}")


def create_tasks(servers: list[ServerProcess], queue: str, count: int, ledger: Ledger, threads: int = 8) -> list[str]:
    """POST ``count`` tasks concurrently, spread over the servers; returns their ids."""
    local = threading.local()
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            with clients_lock:
                local.client = servers[len(clients) % len(servers)].client()
                clients.append(local.client)
        c: httpx.Client = local.client
        return c

    def create(i: int) -> str:
        response = client().post("/v1/tasks", json={"title": f"job {i}", "queue": queue, "data": {"n": i}})
        ledger.note_5xx("create", response)
        assert response.status_code == 201, response.text
        task_id: str = response.json()["id"]
        return task_id

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(create, range(count)))
    finally:
        for c in clients:
            c.close()


def completed_total(client: httpx.Client, queue: str) -> int:
    response = client.get("/v1/tasks", params={"status": "completed", "queue": queue, "count": "true", "limit": 1})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def claimer(
    name: str, client: httpx.Client, queue: str, expected: int, ledger: Ledger, deadline: float, seed: int
) -> Callable[[], None]:
    """Claim (limit 1..10, long-poll 1 s) and complete each claim, until the queue's tasks are all completed."""
    rng = random.Random(seed)

    def loop() -> None:
        with client:
            try:
                claim_and_complete()
            except BaseException:
                ledger.abort.set()
                raise

    def claim_and_complete() -> None:
        while time.monotonic() < deadline and not ledger.abort.is_set():
            response = client.post(
                f"/v1/queues/{queue}/claim",
                json={
                    "worker": {"kind": "automation", "ref": name},
                    "limit": rng.randint(1, 10),
                    "wait_seconds": 1,
                },
            )
            ledger.note_5xx("claim", response)
            assert response.status_code == 200, response.text
            claims = response.json()["claims"]
            with ledger.lock:
                ledger.claim_calls += 1
                ledger.claimed.extend((c["run"]["id"], c["task"]["id"], name) for c in claims)
            if not claims:
                if completed_total(client, queue) >= expected:
                    return
                continue
            for c in claims:
                run_id = c["run"]["id"]
                done = client.post(
                    f"/v1/runs/{run_id}/complete", json={"claim_token": c["claim_token"], "result": {"by": name}}
                )
                ledger.note_5xx("complete", done)
                with ledger.lock:
                    if done.status_code == 200:
                        ledger.completed.append(run_id)
                    else:
                        ledger.refused.append((run_id, done.status_code, done.text[:300]))

    return loop


def drain(servers: list[ServerProcess], queue: str, expected: int, claimers: int, ledger: Ledger) -> float:
    """Run ``claimers`` threads, alternating between the servers, until all ``expected`` tasks are completed."""
    deadline = time.monotonic() + DRAIN_DEADLINE
    started = time.monotonic()
    on = [servers[i % len(servers)] for i in range(claimers)]  # claimer i talks to server i mod n
    loops = [
        claimer(f"claimer-{i}@{server.port}", server.client(), queue, expected, ledger, deadline, seed=i)
        for i, server in enumerate(on)
    ]
    with ThreadPoolExecutor(max_workers=claimers) as pool:
        for future in [pool.submit(loop) for loop in loops]:
            future.result()  # re-raises a claimer's failed assertion
    return time.monotonic() - started


def assert_exactly_once(api: httpx.Client, queue: str, task_ids: list[str], ledger: Ledger, sample: int) -> None:
    assert ledger.server_errors == []
    assert ledger.refused == []

    # No run was handed to two claimers, and no task was claimed twice (each has one attempt only).
    run_counts = Counter(run_id for run_id, _, _ in ledger.claimed)
    assert [r for r, n in run_counts.items() if n > 1] == []
    task_counts = Counter(task_id for _, task_id, _ in ledger.claimed)
    assert [t for t, n in task_counts.items() if n > 1] == []
    assert set(task_counts) == set(task_ids)

    # Every claim was completed once: as many successful completes as tasks, no run completed twice.
    assert len(ledger.completed) == len(task_ids)
    assert len(set(ledger.completed)) == len(ledger.completed)
    assert set(ledger.completed) == set(run_counts)

    # What the server says: all of the queue's tasks completed, nothing left in any other state.
    assert completed_total(api, queue) == len(task_ids)
    everything = api.get("/v1/tasks", params={"queue": queue, "count": "true", "limit": 1}).json()["total"]
    assert everything == len(task_ids)

    # A sample, in detail: the task completed, with exactly one run, completed, the one we completed.
    claimed_run = {task_id: run_id for run_id, task_id, _ in ledger.claimed}
    for task_id in random.Random(0).sample(task_ids, min(sample, len(task_ids))):
        task = api.get(f"/v1/tasks/{task_id}").json()
        assert task["status"] == "completed", task
        assert task["attempts"] == 1, task
        runs = api.get(f"/v1/tasks/{task_id}/runs").json()["items"]
        assert [(r["id"], r["status"], r["end_reason"]) for r in runs] == [
            (claimed_run[task_id], "completed", "completed")
        ]


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_two_servers_eight_claimers_complete_2000_tasks_exactly_once(
    start_server: Callable[..., ServerProcess],
) -> None:
    servers = [start_server(), start_server()]
    ledger = Ledger()
    with servers[0].client() as api:
        assert api.post("/v1/queues", json={"name": "bulk"}).status_code == 201
        task_ids = create_tasks(servers, "bulk", 2000, ledger)
        assert len(set(task_ids)) == 2000

        drain(servers, "bulk", 2000, claimers=8, ledger=ledger)

        assert_exactly_once(api, "bulk", task_ids, ledger, sample=100)
    # Both servers handed out claims (claimer names end with the port of the server they talk to).
    assert {claimer.split("@")[1] for _, _, claimer in ledger.claimed} == {str(s.port) for s in servers}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_one_server_four_claimers_complete_300_tasks_exactly_once(server: ServerProcess, api: httpx.Client) -> None:
    ledger = Ledger()
    assert api.post("/v1/queues", json={"name": "small"}).status_code == 201
    task_ids = create_tasks([server], "small", 300, ledger, threads=4)

    drain([server], "small", 300, claimers=4, ledger=ledger)

    assert_exactly_once(api, "small", task_ids, ledger, sample=300)
