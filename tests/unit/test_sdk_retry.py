"""The SDK's retries: which failures are retried, how long it waits, and that a retry repeats the same call.

Servers here are ``httpx.MockTransport`` handlers (and one real threaded ``http.server``); waits go through an
injected ``sleep`` that records the delay instead of sleeping.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from workloom.client import (
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
)
from workloom.client import _calls as calls
from workloom.client._calls import Call

TASK = {"id": "task_1", "title": "Retry me", "status": "ready"}
RUN = {"id": "run_1", "task_id": "task_1", "attempt": 1, "status": "completed"}


def problem(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"type": f"https://workloom.dev/problems/{code}", "title": code, "status": status, "detail": code}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **headers})


class Script:
    """A mock server answering from a list of responses (or exceptions), recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def client(script: Script, sleeps: list[float], **options: Any) -> Client:
    return Client("http://workloom.test", "wl_key", transport=httpx.MockTransport(script), sleep=sleeps.append,
                  **options)  # fmt: skip


def async_client(script: Script, sleeps: list[float], **options: Any) -> AsyncClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return AsyncClient("http://workloom.test", "wl_key", transport=httpx.MockTransport(script), sleep=sleep,
                       **options)  # fmt: skip


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- 503 and 429 ----------------------------------------------------------------------------------------


def test_two_503_then_success_retries_with_the_same_idempotency_key() -> None:
    script = Script(
        problem(503, "unavailable", **{"Retry-After": "0"}),
        problem(503, "unavailable", **{"Retry-After": "0"}),
        httpx.Response(201, json=TASK),
    )
    sleeps: list[float] = []
    with client(script, sleeps) as wl:
        task = wl.create_task("Retry me", queue="q")
    assert task.id == "task_1"
    assert len(script.requests) == 3 and sleeps == [0.0, 0.0]
    assert script.keys[0] and len(set(script.keys)) == 1  # one logical call, one key
    assert {r.content for r in script.requests} == {script.requests[0].content}
    assert all(r.headers["authorization"] == "Bearer wl_key" for r in script.requests)


async def test_async_two_503_then_success_retries_with_the_same_idempotency_key() -> None:
    script = Script(
        problem(503, "unavailable", **{"Retry-After": "0"}),
        problem(503, "unavailable", **{"Retry-After": "0"}),
        httpx.Response(200, json=RUN),
    )
    sleeps: list[float] = []
    async with async_client(script, sleeps) as wl:
        run = await wl.complete_run("run_1", "clm_1", result={"ok": True})
    assert run.status == "completed"
    assert len(script.requests) == 3 and sleeps == [0.0, 0.0]
    assert script.keys[0] and len(set(script.keys)) == 1


def test_429_waits_for_retry_after() -> None:
    script = Script(problem(429, "rate-limited", **{"Retry-After": "7"}), httpx.Response(200, json=TASK))
    sleeps: list[float] = []
    with client(script, sleeps) as wl:
        assert wl.get_task("task_1").title == "Retry me"
    assert sleeps == [7.0] and len(script.requests) == 2


async def test_async_429_waits_for_retry_after() -> None:
    script = Script(problem(429, "rate-limited", **{"Retry-After": "2.5"}), httpx.Response(200, json=TASK))
    sleeps: list[float] = []
    async with async_client(script, sleeps) as wl:
        assert (await wl.get_task("task_1")).id == "task_1"
    assert sleeps == [2.5]


def test_without_retry_after_the_backoff_is_jittered_and_capped() -> None:
    script = Script(problem(503, "unavailable"))
    sleeps: list[float] = []
    with client(script, sleeps, max_retries=6, backoff_base=0.5, backoff_cap=2.0) as wl, pytest.raises(ServerError):
        wl.get_task("task_1")
    assert len(script.requests) == 7 and len(sleeps) == 6
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    for wait, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_backoff_policy_spans_half_to_all_of_the_doubling_wait() -> None:
    low = RetryPolicy(backoff_base=1.0, backoff_cap=5.0, random=lambda: 0.0)
    high = RetryPolicy(backoff_base=1.0, backoff_cap=5.0, random=lambda: 1.0)
    assert [low.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert [high.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_exhausted_429_raises_rate_limited_with_the_servers_wait() -> None:
    script = Script(problem(429, "rate-limited", **{"Retry-After": "1"}))
    sleeps: list[float] = []
    with client(script, sleeps, max_retries=2) as wl, pytest.raises(RateLimitedError) as caught:
        wl.list_queues()
    assert caught.value.status == 429 and caught.value.retry_after == 1.0
    assert len(script.requests) == 3 and sleeps == [1.0, 1.0]


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(404, "not-found", NotFoundError), (409, "conflict", ConflictError), (422, "validation-error", ValidationError),
     (500, "internal", ServerError)],
)  # fmt: skip
def test_other_errors_are_never_retried(status: int, code: str, error: type[Exception]) -> None:
    script = Script(problem(status, code))
    sleeps: list[float] = []
    with client(script, sleeps) as wl, pytest.raises(error):
        wl.create_task("Once")
    assert len(script.requests) == 1 and sleeps == []


# -- connection failures --------------------------------------------------------------------------------


def test_connection_refused_raises_transport_error_after_max_retries() -> None:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        Client(url, "k", max_retries=3, backoff_base=0.01, sleep=sleeps.append) as wl,
        pytest.raises(TransportError) as caught,
    ):
        wl.create_task("Nobody home")
    assert len(sleeps) == 3
    assert "connection refused" in str(caught.value) and "4 attempts" in str(caught.value)
    assert caught.value.status is None and isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_async_connection_refused_raises_transport_error_after_max_retries() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncClient(f"http://127.0.0.1:{closed_port()}", "k", max_retries=2, sleep=sleep) as wl:
        with pytest.raises(TransportError, match="connection refused"):
            await wl.get_task("WL-1")
    assert len(sleeps) == 2


def test_a_dropped_answer_is_retried_only_when_the_call_is_safe_to_repeat() -> None:
    dropped = httpx.ReadError("connection reset")
    sleeps: list[float] = []

    script = Script(dropped, httpx.Response(204))
    with client(script, sleeps) as wl, pytest.raises(TransportError):
        wl.delete_task("task_1")  # no idempotency key: a repeat might delete twice
    assert len(script.requests) == 1

    script = Script(dropped, httpx.Response(200, json=TASK))
    with client(script, sleeps) as wl:
        assert wl.get_task("task_1").id == "task_1"
    assert len(script.requests) == 2

    script = Script(dropped, httpx.Response(200, json=TASK))
    with client(script, sleeps) as wl:
        assert wl.cancel_task("task_1", "stop").id == "task_1"  # carries an Idempotency-Key
    assert len(script.requests) == 2 and len(set(script.keys)) == 1

    script = Script(httpx.ConnectError("refused"), httpx.Response(204))
    with client(script, sleeps) as wl:
        wl.delete_task("task_1")  # the request never left: safe to send
    assert len(script.requests) == 2


def test_an_unknown_outcome_is_repeated_only_when_the_call_is_safe_to_repeat() -> None:
    unknown = problem(503, "outcome-unknown")
    sleeps: list[float] = []

    script = Script(unknown, httpx.Response(204))
    with client(script, sleeps) as wl, pytest.raises(OutcomeUnknownError) as raised:
        wl.delete_task("task_1")  # no idempotency key: it may have been deleted already
    assert len(script.requests) == 1 and raised.value.status == 503

    script = Script(unknown, httpx.Response(200, json=TASK))
    with client(script, sleeps) as wl:
        assert wl.cancel_task("task_1", "stop").id == "task_1"  # its key makes the repeat safe
    assert len(script.requests) == 2 and len(set(script.keys)) == 1


def test_max_retries_zero_tries_once() -> None:
    script = Script(problem(503, "unavailable", **{"Retry-After": "0"}))
    sleeps: list[float] = []
    with client(script, sleeps, max_retries=0) as wl, pytest.raises(ServerError):
        wl.get_task("task_1")
    assert len(script.requests) == 1 and sleeps == []


# -- idempotency keys and timeouts ----------------------------------------------------------------------


KEYED: dict[str, Call[Any]] = {
    "create_queue": calls.create_queue("q", {}, None),
    "create_task": calls.create_task("t", {}, None),
    "create_child": calls.create_child("task_1", "t", {}, None),
    "publish": calls.transition("task_1", "publish", None),
    "approve": calls.transition("task_1", "approve", None, comment="ok"),
    "reject": calls.transition("task_1", "reject", None),
    "cancel": calls.transition("task_1", "cancel", None),
    "start": calls.transition("task_1", "start", None),
    "claim": calls.claim("q", {"kind": "automation", "ref": "w"}, 1, None, 0, None),
    "run_start": calls.run_action("run_1", "start", None, claim_token="c"),
    "run_complete": calls.run_action("run_1", "complete", None, claim_token="c"),
    "run_fail": calls.run_action("run_1", "fail", None, claim_token="c", error="e"),
    "run_release": calls.run_action("run_1", "release", None, claim_token="c"),
}
UNKEYED: dict[str, Call[Any]] = {
    "get_task": calls.get_task("task_1"),
    "update_task": calls.update_task("task_1", {"title": "x"}),
    "update_queue": calls.update_queue("q", {"lease_seconds": 5}),
    "delete_task": calls.delete_task("task_1"),
    "heartbeat": calls.heartbeat("run_1", "c", None, None, None),
    "add_dependencies": calls.add_dependencies("task_1", ["task_2"]),
}


@pytest.mark.parametrize("name", sorted(KEYED))
def test_creating_and_transition_posts_carry_a_fresh_key(name: str) -> None:
    call = KEYED[name]
    assert call.method == "POST" and call.idempotency_key and call.retry_safe
    assert call.headers == {"Idempotency-Key": call.idempotency_key}


@pytest.mark.parametrize("name", sorted(UNKEYED))
def test_reads_updates_and_heartbeats_carry_no_key(name: str) -> None:
    assert UNKEYED[name].idempotency_key is None and UNKEYED[name].headers == {}


def test_each_logical_call_gets_its_own_key_unless_the_caller_names_one() -> None:
    script = Script(httpx.Response(201, json=TASK))
    with client(script, []) as wl:
        wl.create_task("a")
        wl.create_task("a")
        wl.create_task("a", idempotency_key="mine")
        wl.publish_task("task_1", idempotency_key="mine-too")
    first, second, mine, mine_too = script.keys
    assert first and second and first != second
    assert (mine, mine_too) == ("mine", "mine-too")


def test_long_poll_claims_add_their_wait_to_the_read_timeout() -> None:
    script = Script(httpx.Response(200, json={"claims": []}))
    with client(script, [], timeout=10.0) as wl:
        assert wl.claim("q", wait_seconds=5) == []
        assert wl.claim("q") == []
    polled, plain = (r.extensions["timeout"] for r in script.requests)
    assert polled["read"] == 15.0 and polled["connect"] == 10.0
    assert plain["read"] == 10.0
    assert json.loads(script.requests[0].content)["wait_seconds"] == 5


# -- a real HTTP server ---------------------------------------------------------------------------------


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) to the first two requests, then 201 with a task."""

    seen: list[dict[str, str]]
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        with self.lock:
            self.seen.append(dict(self.headers.items()))
            failing = len(self.seen) <= 2
        status, body = (503, b'{"title": "busy", "status": 503}') if failing else (201, json.dumps(TASK).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json" if failing else "application/json")
        self.send_header("Content-Length", str(len(body)))
        if failing:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler: Callable[..., Flaky] = type("FlakyHandler", (Flaky,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_a_real_server_answering_503_twice(flaky_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = flaky_server
    sleeps: list[float] = []
    with Client(url, "wl_key", sleep=sleeps.append) as wl:
        task = wl.create_task("Retry me")
    assert task.title == "Retry me" and len(seen) == 3 and sleeps == [0.0, 0.0]
    keys = {headers["Idempotency-Key"] for headers in seen}
    assert len(keys) == 1 and keys != {""}


async def test_a_real_server_answering_503_twice_async(flaky_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = flaky_server
    async with AsyncClient(url, "wl_key", max_retries=2, backoff_base=0.001) as wl:
        task = await wl.create_task("Retry me")
    assert task.id == "task_1" and len(seen) == 3
    assert len({headers["Idempotency-Key"] for headers in seen}) == 1
