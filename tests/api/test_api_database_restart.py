"""PostgreSQL ends every session of the server mid-traffic (a restart, a failover, an operator's
``pg_terminate_backend``): the server goes on answering as if nothing happened. Every call made while and
after the sessions end is answered without a 5xx, every task is completed exactly once, and an event
stream open throughout delivers every completion."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serverproc import ServerProcess, poll

from databases import run_sync
from workloom.store.database import plain_url

TASKS_EACH_ROUND = 40
CUTS = 3
TASKS = TASKS_EACH_ROUND * (CUTS + 1)
WORKERS = 4
pytestmark = pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


async def _end_every_session(url: str) -> int:
    """End every other session on the database (the server's pooled ones, its listener, its notifier), and
    wait until PostgreSQL has; the number ended."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        ended: list[int] = await conn.fetchval(
            "WITH others AS MATERIALIZED (SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid())"
            " SELECT coalesce(array_agg(pid), '{}') FROM others WHERE pg_terminate_backend(pid)"
        )
        async with asyncio.timeout(10):
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", ended):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the server's view of the ended sessions, polled
        return len(ended)
    finally:
        await conn.close()


class Workers:
    """Claim-and-complete loops over HTTP, recording every answer that was not a success."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.lock = threading.Lock()
        self.completed: list[str] = []  # task ids, one per completion answered 200
        self.refused: list[str] = []
        self.stop = threading.Event()

    def run(self, n: int) -> None:
        """Worker ``n``, on server ``n`` (round the servers)."""
        name = f"worker-{n}"
        with self.servers[n % len(self.servers)].client(timeout=30) as client:
            while not self.stop.is_set():
                body = {"worker": {"kind": "automation", "ref": name}, "limit": 5, "wait_seconds": 1}
                claimed = client.post("/v1/queues/restarts/claim", json=body)
                if claimed.status_code != 200:
                    self.note(f"claim {claimed.status_code} {claimed.text[:200]}")
                    continue
                for c in claimed.json()["claims"]:
                    done = client.post(f"/v1/runs/{c['run']['id']}/complete", json={"claim_token": c["claim_token"]})
                    if done.status_code != 200:
                        self.note(f"complete {done.status_code} {done.text[:200]}")
                        continue
                    with self.lock:
                        self.completed.append(c["task"]["id"])

    def note(self, refusal: str) -> None:
        with self.lock:
            self.refused.append(refusal)

    def count(self) -> int:
        with self.lock:
            return len(self.completed)


class Follower:
    """One event stream open from the start, collecting the task of every ``task.completed`` it delivers."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.completed: list[str] = []
        self.ended: str | None = None  # why the stream ended, if it did
        self.stop = threading.Event()  # looked at on every line, keep-alives included

    def run(self) -> None:
        params = {"after": "0", "types": "task.completed"}
        with self.server.client(timeout=30) as client, client.stream("GET", "/v1/events/stream", params=params) as r:
            if r.status_code != 200:
                self.ended = f"stream answered {r.status_code}"
                return
            for line in r.iter_lines():
                if self.stop.is_set():
                    self.ended = "stopped before every completion was delivered"
                    return
                if line.startswith("data: "):
                    with self.lock:
                        self.completed.append(orjson.loads(line[6:])["task_id"])
                        if len(self.completed) == TASKS:
                            return
        self.ended = "the stream ended before every completion was delivered"

    def count(self) -> int:
        with self.lock:
            return len(self.completed)


def _stream_report(follower: Follower, workers: Workers, server: ServerProcess) -> str:
    """What a stream that fell short missed, and what its server logged above info: for the next reader."""
    with follower.lock:
        delivered = set(follower.completed)
    with workers.lock:
        missing = sorted(set(workers.completed) - delivered)
    logged = [line for line in server.log_path.read_text().splitlines() if '"level":"info"' not in line]
    return f"completions not delivered: {missing}\nthe stream's server logged:\n" + "\n".join(logged[-40:])


def _server_errors(servers: list[ServerProcess]) -> list[dict[str, float]]:
    """Each server's own count of the requests it answered with a 5xx, by status."""
    return [_errors_of(server) for server in servers]


def _errors_of(server: ServerProcess) -> dict[str, float]:
    """The server's own count of the requests it answered with a 5xx, by status."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "workloom_http_requests"
        for sample in family.samples
        if sample.name == "workloom_http_requests_total" and sample.labels["status"].startswith("5")
    }


@pytest.mark.parametrize("servers", [1, 2], ids=["one-server", "two-servers"])
def test_no_call_fails_and_no_task_is_lost_when_the_database_ends_every_session(
    start_server: Callable[..., ServerProcess], servers: int
) -> None:
    """With two servers, half the workers and the stream are on the second one, which hears of the first
    one's work through its LISTEN connection: ended too, and made again."""
    started = [start_server(WORKLOOM_SSE_KEEPALIVE_SECONDS="0.5") for _ in range(servers)]
    server = started[0]
    workers = Workers(started)
    follower = Follower(started[-1])
    created: list[str] = []
    with server.client() as api, ThreadPoolExecutor(max_workers=WORKERS + 1) as pool:
        assert api.post("/v1/queues", json={"name": "restarts"}).status_code == 201
        following = pool.submit(follower.run)
        loops = [pool.submit(workers.run, n) for n in range(WORKERS)]
        try:
            for cut in range(CUTS + 1):
                for n in range(TASKS_EACH_ROUND):
                    response = api.post("/v1/tasks", json={"title": f"round {cut} task {n}", "queue": "restarts"})
                    assert response.status_code == 201, response.text
                    created.append(response.json()["id"])
                # Reads of every kind, right after the cut: a task, a list, a timeline, readiness.
                seen: dict[str, Any] = api.get(f"/v1/tasks/{created[-1]}").json()
                assert seen["id"] == created[-1], seen
                assert api.get("/v1/tasks", params={"queue": "restarts", "limit": 5}).status_code == 200
                assert api.get(f"/v1/tasks/{created[0]}/timeline").status_code == 200
                assert api.get("/readyz").status_code == 200
                poll(lambda: workers.count() >= len(created) // 2, "half of this round's tasks to be done", 60)
                if cut < CUTS:
                    assert run_sync(_end_every_session(server.database_url)) >= 2
            poll(lambda: workers.count() >= TASKS, "every task to be completed", 60)
            poll(
                lambda: follower.count() >= TASKS or follower.ended,
                "the stream to deliver every completion",
                60,
                why=lambda: _stream_report(follower, workers, started[-1]),
            )
            following.result(timeout=5)
        finally:
            workers.stop.set()
            follower.stop.set()
            for loop in loops:
                loop.result(timeout=30)
    assert workers.refused == []
    assert sorted(workers.completed) == sorted(created)  # each once
    assert follower.ended is None
    assert sorted(follower.completed) == sorted(created)
    assert _server_errors(started) == [{}] * servers
