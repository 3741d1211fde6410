"""Crash and shutdown: ``kill -9`` mid-traffic loses no committed completion and strands no lease; SIGTERM
lets an in-flight long-poll finish with a complete answer."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from serverproc import ServerProcess, poll

TASKS = 200
ABANDONED = 10  # claimed before the crash and never completed by anyone holding that claim
KILL_AFTER = 40  # committed completions observed before the server is killed
LEASE_SECONDS = 2
RECOVERY_DEADLINE = 30.0


@dataclass
class Traffic:
    """What the workers saw before the crash."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: dict[str, str] = field(default_factory=dict)  # run id -> task id, complete answered 200
    unanswered: dict[str, str] = field(default_factory=dict)  # run id -> task id, complete sent, no answer
    never_sent: dict[str, str] = field(default_factory=dict)  # run id -> task id, claimed, complete not sent
    transport_errors: list[str] = field(default_factory=list)
    other_answers: list[str] = field(default_factory=list)


def worker(server: ServerProcess, name: str, traffic: Traffic) -> None:
    """Claim and complete until the server goes away: every worker ends on a transport error."""
    with server.client(timeout=10) as client:
        pending: dict[str, tuple[str, str]] = {}  # run id -> (task id, token)
        try:
            while True:
                response = client.post(
                    "/v1/queues/crashy/claim",
                    json={"worker": {"kind": "automation", "ref": name}, "limit": 5, "wait_seconds": 1},
                )
                if response.status_code != 200:
                    with traffic.lock:
                        traffic.other_answers.append(f"claim {response.status_code} {response.text[:200]}")
                    continue
                pending = {c["run"]["id"]: (c["task"]["id"], c["claim_token"]) for c in response.json()["claims"]}
                for run_id, (task_id, token) in list(pending.items()):
                    try:
                        done = client.post(f"/v1/runs/{run_id}/complete", json={"claim_token": token})
                    except httpx.TransportError:
                        with traffic.lock:
                            traffic.unanswered[run_id] = task_id
                        del pending[run_id]
                        raise
                    del pending[run_id]
                    with traffic.lock:
                        if done.status_code == 200:
                            traffic.committed[run_id] = task_id
                        else:
                            traffic.other_answers.append(f"complete {done.status_code} {done.text[:200]}")
        except httpx.TransportError as exc:
            with traffic.lock:
                traffic.transport_errors.append(f"{name}: {type(exc).__name__}")
        finally:
            with traffic.lock:
                traffic.never_sent.update({run_id: task_id for run_id, (task_id, _) in pending.items()})


def claim(client: httpx.Client, name: str, limit: int, wait: float = 0) -> list[dict[str, Any]]:
    response = client.post(
        "/v1/queues/crashy/claim",
        json={"worker": {"kind": "automation", "ref": name}, "limit": limit, "wait_seconds": wait},
    )
    assert response.status_code == 200, response.text
    claims: list[dict[str, Any]] = response.json()["claims"]
    return claims


def run_of(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


def completed_count(client: httpx.Client) -> int:
    response = client.get("/v1/tasks", params={"queue": "crashy", "status": "completed", "count": "true", "limit": 1})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


@pytest.fixture
def crashy(start_server: Callable[..., ServerProcess]) -> tuple[ServerProcess, list[str]]:
    """A server with queue ``crashy`` (2 s leases, immediate retry) holding ``TASKS`` ready tasks."""
    first = start_server()
    with first.client() as api:
        response = api.post(
            "/v1/queues", json={"name": "crashy", "lease_seconds": LEASE_SECONDS, "initial_interval_seconds": 0}
        )
        assert response.status_code == 201, response.text

        def create(i: int) -> str:
            created = api.post("/v1/tasks", json={"title": f"crash {i}", "queue": "crashy"})
            assert created.status_code == 201, created.text
            task_id: str = created.json()["id"]
            return task_id

        with ThreadPoolExecutor(max_workers=4) as pool:
            task_ids = list(pool.map(create, range(TASKS)))
    return first, task_ids


def test_kill_9_loses_no_committed_completion_and_recovers_expired_leases(
    crashy: tuple[ServerProcess, list[str]], start_server: Callable[..., ServerProcess]
) -> None:
    first, task_ids = crashy
    with first.client() as api:
        abandoned = claim(api, "abandoner", ABANDONED)
    assert len(abandoned) == ABANDONED

    # Four workers claim and complete; the server is killed while they are at it.
    traffic = Traffic()
    threads = [threading.Thread(target=worker, args=(first, f"w{i}", traffic)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        poll(lambda: len(traffic.committed) >= KILL_AFTER, f"{KILL_AFTER} committed completions", 60, 0.1)
    finally:
        first.kill()  # SIGKILL, also if the poll failed: the workers run until the server is gone
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert traffic.other_answers == []
    # Every worker found out about the crash by a failed request: the kill hit live traffic.
    assert len(traffic.transport_errors) == 4, traffic.transport_errors
    committed = dict(traffic.committed)
    assert len(committed) >= KILL_AFTER

    second = start_server()  # a new process on the same database
    with second.client() as api:
        # 1. Every completion that was answered 200 before the kill is still there.
        for run_id, task_id in committed.items():
            run = run_of(api, run_id)
            assert (run["status"], run["end_reason"]) == ("completed", "completed"), run
            assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "completed"

        # 2. Leases whose holder never completed run out, and their tasks go back to the queue.
        stranded = {c["run"]["id"]: c["task"]["id"] for c in abandoned} | traffic.never_sent

        def expired_attempts() -> dict[str, int] | None:
            runs = {run_id: run_of(api, run_id) for run_id in stranded}
            if all((r["status"], r["end_reason"]) == ("failed", "lease_expired") for r in runs.values()):
                return {stranded[run_id]: r["attempt"] for run_id, r in runs.items()}
            return None

        attempt_of = poll(expired_attempts, "the stranded runs to fail as lease_expired", RECOVERY_DEADLINE, 0.1)

        # A complete sent as the server died either committed or was lost with it; never half-done. (Polled:
        # the ticker expires due leases one transaction at a time, so one with the same deadline as the
        # stranded runs may still be on its way out when the last of them has gone.)
        def unanswered_ends() -> list[tuple[str, str]]:
            return [(run["status"], run["end_reason"]) for run in map(partial(run_of, api), traffic.unanswered)]

        poll(lambda: ("claimed", None) not in unanswered_ends(), "the unanswered runs to end", RECOVERY_DEADLINE, 0.1)
        ends = unanswered_ends()
        assert set(ends) <= {("completed", "completed"), ("failed", "lease_expired")}, ends

        # The old holder's token no longer holds its run.
        old = abandoned[0]
        late = api.post(f"/v1/runs/{old['run']['id']}/complete", json={"claim_token": old["claim_token"]})
        assert late.status_code == 409, late.text
        assert late.json()["type"].endswith("/stale-claim")

        # 3. A new claimer finishes everything, including the recovered tasks.
        recovered: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 60
        while completed_count(api) < TASKS:
            assert time.monotonic() < deadline, "the queue was not drained after the restart"
            for c in claim(api, "after-restart", 10, wait=1):
                done = api.post(f"/v1/runs/{c['run']['id']}/complete", json={"claim_token": c["claim_token"]})
                assert done.status_code == 200, done.text
                recovered[c["task"]["id"]] = done.json()

        # Finally every task is completed, by exactly one completed run; all other runs lost their lease.
        assert completed_count(api) == TASKS
        for task_id in task_ids:
            task = api.get(f"/v1/tasks/{task_id}").json()
            assert task["status"] == "completed", task
            runs = api.get(f"/v1/tasks/{task_id}/runs").json()["items"]
            outcomes = sorted((r["status"], r["end_reason"]) for r in runs)
            assert outcomes.count(("completed", "completed")) == 1, runs
            assert set(outcomes) <= {("completed", "completed"), ("failed", "lease_expired")}, runs
        for run_id, task_id in stranded.items():
            assert task_id in recovered, f"stranded task {task_id} (run {run_id}) was not claimed again"
            again = recovered[task_id]
            assert again["attempt"] == attempt_of[task_id] + 1, again
            assert again["claimed_by"]["ref"] == "after-restart", again


def _claim_attempts(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(r"^workloom_claim_latency_seconds_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_sigterm_answers_a_waiting_long_poll_and_exits_cleanly(server: ServerProcess, api: httpx.Client) -> None:
    assert api.post("/v1/queues", json={"name": "idle"}).status_code == 201

    def long_poll() -> tuple[httpx.Response, float]:
        with server.client(timeout=30) as client:
            started = time.monotonic()
            response = client.post(
                "/v1/queues/idle/claim", json={"worker": {"kind": "automation", "ref": "waiter"}, "wait_seconds": 10}
            )
            return response, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(long_poll)
        # The server has looked at the (empty) queue once: the claim is now waiting.
        poll(lambda: _claim_attempts(server) >= 1, "the long-poll claim to reach the server", 10, 0.1)
        assert not future.done()

        signalled = time.monotonic()
        returncode = server.terminate(timeout=15)
        exited_after = time.monotonic() - signalled
        response, waited = future.result(timeout=15)

    # Observed behaviour: the waiting claim is answered at once with a complete, empty 200 (not cut off),
    # and the process then exits with status 0, well before the 10 s wait would have ended.
    assert response.status_code == 200, response.text
    assert response.json() == {"claims": []}
    assert waited < 8, f"the long-poll was not cut short by the shutdown ({waited:.1f}s)"
    assert exited_after < 5, f"the server took {exited_after:.1f}s to exit"
    assert returncode == 0, f"exit status {returncode}; log:\n{server.log_path.read_text()}"
