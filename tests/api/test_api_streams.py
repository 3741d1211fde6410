"""Server-sent events: a task's timeline as a stream, the workspace's event log, resume, keep-alives.

The server sends a keep-alive every 0.5 s here, so a read never waits long and a quiet stream is visible.
Reads are bounded by a deadline and by the number of messages, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from serverproc import ServerProcess

WORKER = {"kind": "automation", "ref": "streamer"}
KEEPALIVE = "0.5"
DEADLINE = 15.0


@dataclass
class Message:
    id: str | None
    event: str | None
    data: Any


@dataclass
class SSE:
    """Reads a text/event-stream response as a browser's EventSource would: comments are kept aside, a block
    without data dispatches nothing but its ``id`` still becomes the id to resume from (``last_id``)."""

    response: httpx.Response
    comments: list[str] = field(default_factory=list)
    last_id: str | None = None
    lines: Iterator[str] | None = None

    def _next_line(self) -> str:
        if self.lines is None:
            self.lines = self.response.iter_lines()
        return next(self.lines)

    def next(self, deadline: float) -> Message | None:
        """The next event, or None once ``deadline`` (monotonic) passes first."""
        fields: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            line = self._next_line()
            if line == "":
                if "id" in fields:
                    self.last_id = fields["id"][-1]
                if "data" in fields:
                    data = "\n".join(fields["data"])
                    return Message(self.last_id, fields.get("event", [None])[-1], json.loads(data))
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        return None

    def take(self, count: int, seconds: float = DEADLINE) -> list[Message]:
        deadline = time.monotonic() + seconds
        out: list[Message] = []
        while len(out) < count:
            message = self.next(deadline)
            if message is None:
                break
            out.append(message)
        return out

    def until(self, done: Callable[[Message], bool], seconds: float = DEADLINE) -> list[Message]:
        """Messages up to and including the first for which ``done`` is true (bounded by ``seconds``)."""
        deadline = time.monotonic() + seconds
        out: list[Message] = []
        while True:
            message = self.next(deadline)
            assert message is not None, f"gave up after {seconds}s; received {[(m.id, m.event) for m in out]}"
            out.append(message)
            if done(message):
                return out
            assert len(out) < 1000

    def quiet_for(self, seconds: float) -> list[Message]:
        """Every event that arrives within ``seconds`` (keep-alives keep the reads short)."""
        deadline = time.monotonic() + seconds
        out: list[Message] = []
        while (message := self.next(deadline)) is not None:
            out.append(message)
        return out


@contextmanager
def sse(client: httpx.Client, path: str, **kwargs: Any) -> Iterator[SSE]:
    with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSE(response)


@pytest.fixture
def streaming_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(WORKLOOM_SSE_KEEPALIVE_SECONDS=KEEPALIVE)


@pytest.fixture
def api(streaming_server: ServerProcess) -> Iterator[httpx.Client]:
    with streaming_server.client(timeout=10) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def timeline(api: httpx.Client, task_id: str, after: int = 0) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(api.get(f"/v1/tasks/{task_id}/timeline", params={"after_sequence": after}))[
        "items"
    ]
    return items


def claim(api: httpx.Client, queue: str) -> dict[str, Any]:
    claims = ok(api.post(f"/v1/queues/{queue}/claim", json={"worker": WORKER}))["claims"]
    assert len(claims) == 1
    claimed: dict[str, Any] = claims[0]
    return claimed


def as_sent(messages: list[Message]) -> list[dict[str, Any]]:
    """Each message's event JSON, after checking that id and event name agree with it."""
    for m in messages:
        assert m.event == m.data["type"], m
    return [m.data for m in messages]


def test_task_stream_replays_then_follows_and_resumes(api: httpx.Client) -> None:
    task = ok(api.post("/v1/tasks", json={"title": "Watched", "queue": "watch"}), 201)
    history = timeline(api, task["id"])
    assert len(history) >= 2

    with sse(api, f"/v1/tasks/{task['id']}/stream") as stream:
        replay = stream.take(len(history))
        assert [m.id for m in replay] == [str(e["task_sequence"]) for e in history]
        assert as_sent(replay) == history

        c = claim(api, "watch")  # live events, while the stream is open
        live = stream.until(lambda m: m.event == "task.in_progress")
        assert [m.id for m in live] == [str(n) for n in range(len(history) + 1, len(history) + 1 + len(live))]
        assert "run.claimed" in [m.event for m in live]
        assert as_sent(live) == timeline(api, task["id"], after=len(history))
        last_seen = int(live[-1].id or 0)

        assert stream.quiet_for(1.2) == []  # nothing new happened: no repeats
        assert "keep-alive" in stream.comments, "no keep-alive while the stream was idle"

    # while nobody listens, the run is started and completed
    ok(api.post(f"/v1/runs/{c['run']['id']}/start", json={"claim_token": c["claim_token"]}))
    ok(api.post(f"/v1/runs/{c['run']['id']}/complete", json={"claim_token": c["claim_token"], "result": 42}))
    missed = timeline(api, task["id"], after=last_seen)
    assert [e["type"] for e in missed][-1] == "task.completed"

    headers = {"Last-Event-ID": str(last_seen)}
    with sse(api, f"/v1/tasks/{task['id']}/stream", headers=headers) as resumed:
        again = resumed.take(len(missed))
        assert [int(m.id or 0) for m in again] == list(range(last_seen + 1, last_seen + 1 + len(missed)))
        assert as_sent(again) == missed
        assert resumed.quiet_for(1.2) == []  # no duplicates after the resume point

    # after_sequence does the same as Last-Event-ID; the header wins when both are given, since a reconnecting
    # EventSource repeats its original URL and adds Last-Event-ID
    with sse(api, f"/v1/tasks/{task['id']}/stream", params={"after_sequence": 2}) as from_two:
        everything = timeline(api, task["id"])
        assert as_sent(from_two.take(len(everything) - 2)) == everything[2:]
    with sse(
        api, f"/v1/tasks/{task['id']}/stream", params={"after_sequence": 1}, headers={"Last-Event-ID": str(last_seen)}
    ) as both:
        assert as_sent(both.take(len(missed))) == missed


def test_events_stream_follows_the_workspace_filters_and_resumes(api: httpx.Client) -> None:
    ok(api.post("/v1/queues", json={"name": "flow"}), 201)
    earlier = ok(api.post("/v1/tasks", json={"title": "Before the stream", "queue": "flow"}), 201)
    earlier_sequences = {e["sequence"] for e in timeline(api, earlier["id"])}

    with (
        sse(api, "/v1/events/stream") as everything,
        sse(api, "/v1/events/stream", params={"types": "task.created,task.completed"}) as some,
    ):
        first = ok(api.post("/v1/tasks", json={"title": "First", "queue": "flow"}), 201)
        c = claim(api, "flow")
        assert c["task"]["id"] == earlier["id"]
        ok(api.post(f"/v1/runs/{c['run']['id']}/complete", json={"claim_token": c["claim_token"]}))
        second = ok(api.post("/v1/tasks", json={"title": "Second"}), 201)

        newest = timeline(api, second["id"])[-1]["sequence"]
        messages = everything.until(lambda m: m.data["sequence"] >= newest)
        seen = as_sent(messages)
        sequences = [e["sequence"] for e in seen]
        assert [m.id for m in messages] == [str(n) for n in sequences]
        assert sequences == sorted(set(sequences)), sequences
        opened_after = max(earlier_sequences)  # nothing happened between that event and opening the stream
        expected = sorted(
            (e for t in (earlier, first, second) for e in timeline(api, t["id"]) if e["sequence"] > opened_after),
            key=lambda e: e["sequence"],
        )
        assert seen == expected  # every event of the workspace since the stream opened, in order, once

        filtered = as_sent(some.until(lambda m: m.data["task_id"] == second["id"]))
        assert [(e["type"], e["task_id"]) for e in filtered] == [
            ("task.created", first["id"]),
            ("task.completed", earlier["id"]),
            ("task.created", second["id"]),
        ]

        last = sequences[-1]
        assert everything.quiet_for(1.2) == []
        assert "keep-alive" in everything.comments

    # resume after the last event seen: the events made while away, none twice, none missing
    third = ok(api.post("/v1/tasks", json={"title": "Third", "queue": "flow"}), 201)
    c = claim(api, "flow")
    assert c["task"]["id"] == first["id"]
    ok(
        api.post(
            f"/v1/runs/{c['run']['id']}/fail", json={"claim_token": c["claim_token"], "error": "x", "retryable": False}
        )
    )
    missed = sorted(
        (e for t in (first, third) for e in timeline(api, t["id"]) if e["sequence"] > last),
        key=lambda e: e["sequence"],
    )
    assert missed
    with sse(api, "/v1/events/stream", headers={"Last-Event-ID": str(last)}) as resumed:
        got = resumed.take(len(missed))
        assert [m.id for m in got] == [str(e["sequence"]) for e in missed]
        assert as_sent(got) == missed
        assert resumed.quiet_for(1.2) == []
    with sse(api, "/v1/events/stream", params={"after": str(last), "types": "task.created"}) as typed:
        assert as_sent(typed.take(1)) == [e for e in missed if e["type"] == "task.created"]
    with sse(api, "/v1/events/stream", params={"after": "0", "task_id": second["identifier"]}) as one_task:
        history = timeline(api, second["id"])
        assert as_sent(one_task.take(len(history))) == history
        assert one_task.quiet_for(1.2) == []


def test_idle_streams_send_keepalives_and_where_they_start(api: httpx.Client) -> None:
    task = ok(api.post("/v1/tasks", json={"title": "Quiet"}), 201)
    history = timeline(api, task["id"])
    newest = history[-1]["sequence"]
    opened_at: dict[str, str | None] = {}
    for path in ("/v1/events/stream", f"/v1/tasks/{task['id']}/stream"):
        with sse(api, path) as stream:
            deadline = time.monotonic() + DEADLINE
            messages = []
            while stream.comments.count("keep-alive") < 3 and time.monotonic() < deadline:
                message = stream.next(time.monotonic() + 1)
                if message is not None:
                    messages.append(message)
            assert stream.comments.count("keep-alive") >= 3, (path, stream.comments)
            opened_at[path] = stream.last_id
            if path.startswith("/v1/events"):
                assert messages == []  # the stream starts at "now": only keep-alives
            else:
                assert as_sent(messages) == history

    # a client that saw no event still knows where its stream began, and resumes from there without a gap
    assert opened_at["/v1/events/stream"] == str(newest)
    later = ok(api.post("/v1/tasks", json={"title": "While away"}), 201)
    made = timeline(api, later["id"])
    with sse(api, "/v1/events/stream", headers={"Last-Event-ID": str(opened_at["/v1/events/stream"])}) as resumed:
        assert as_sent(resumed.take(len(made))) == made
        assert resumed.quiet_for(1.2) == []


@contextmanager
def stray_transaction(database_url: str) -> Iterator[None]:
    """Another client of the same database holding a transaction open (an operator's forgotten psql session)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM events").fetchone()
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    opened, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            await conn.fetchval("SELECT txid_current()")  # a real transaction id, as any writer has
            opened.set()
            await asyncio.to_thread(release.wait)
            await transaction.rollback()
        except Exception as exc:
            failure.append(exc)
            opened.set()
        finally:
            await conn.close()

    holder = threading.Thread(target=lambda: asyncio.run(hold()))
    holder.start()
    try:
        assert opened.wait(10) and not failure, failure
        yield
    finally:
        release.set()
        holder.join(10)


def test_events_stream_is_not_stalled_by_an_idle_transaction(
    streaming_server: ServerProcess, api: httpx.Client
) -> None:
    """The stream may hold events back while an earlier writer could still commit, but only for a bounded
    time in total: an unrelated transaction left open must not slow every following event down."""
    with stray_transaction(streaming_server.database_url), sse(api, "/v1/events/stream") as stream:
        began = time.monotonic()
        made = [ok(api.post("/v1/tasks", json={"title": f"Busy {n}"}), 201) for n in range(6)]
        newest = timeline(api, made[-1]["id"])[-1]["sequence"]
        received = stream.until(lambda m: m.data["sequence"] >= newest, seconds=20)
        elapsed = time.monotonic() - began
    expected = sorted((e for t in made for e in timeline(api, t["id"])), key=lambda e: e["sequence"])
    assert as_sent(received) == expected
    assert elapsed < 10, f"{len(received)} events took {elapsed:.1f}s to arrive while a transaction was open"
