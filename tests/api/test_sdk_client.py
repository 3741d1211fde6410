"""The Python SDK against the real server process, on every database.

Each test walks a story through ``workloom.client`` (sync, and async where the path differs) and checks what
comes back is typed: models with parsed datetimes, pages, and exceptions carrying the problem+json fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from serverproc import ServerProcess

from workloom.client import (
    Actor,
    AsyncClient,
    AsyncEventStream,
    AuthenticationError,
    Claim,
    Client,
    ConflictError,
    Event,
    IdempotencyKeyReusedError,
    NotFoundError,
    Page,
    Queue,
    Run,
    StaleClaimError,
    Task,
    TaskTree,
    ValidationError,
    WorkloomError,
)

WORKER = Actor(kind="automation", ref="sdk-worker")


@pytest.fixture
def wl(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, server.token) as client:
        yield client


def one(claims: list[Claim]) -> Claim:
    assert len(claims) == 1, claims
    return claims[0]


async def take(stream: AsyncEventStream, n: int) -> list[Event]:
    return [await stream.__anext__() for _ in range(n)]


def aware(value: datetime | None) -> datetime:
    assert isinstance(value, datetime) and value.tzinfo is not None, value
    return value


# -- every resource, synchronously ------------------------------------------------------------------------


def test_configured_from_the_environment(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKLOOM_URL", server.url + "/")
    monkeypatch.setenv("WORKLOOM_API_KEY", server.token)
    with Client() as client:
        assert client.base_url == server.url
        assert client.health() == {"status": "ok"}
        assert client.list_queues() == []
    monkeypatch.setenv("WORKLOOM_API_KEY", "wl_wrong")
    with Client() as client, pytest.raises(AuthenticationError) as caught:
        client.list_queues()
    assert caught.value.status == 401 and caught.value.code == "unauthorized"


def test_queues_tasks_and_runs(wl: Client) -> None:
    queue = wl.create_queue("work", description="the main line", lease_seconds=60, initial_interval_seconds=0)
    assert isinstance(queue, Queue)
    assert (queue.name, queue.description, queue.lease_seconds, queue.max_attempts) == ("work", "the main line", 60, 3)
    aware(queue.created_at)
    assert wl.get_queue("work") == queue
    assert [q.name for q in wl.list_queues()] == ["work"]
    patched = wl.update_queue("work", lease_seconds=120, max_attempts=2)
    assert (patched.lease_seconds, patched.max_attempts, patched.description) == (120, 2, "the main line")

    due = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = wl.create_task(
        "Summarise the report",
        queue="work",
        data={"url": "https://example.com/r.pdf"},
        priority="high",
        due_at=due,
        owner=Actor(kind="human", ref="ada"),
        metadata={"source": "sdk"},
        description="all of it",
    )
    assert isinstance(task, Task)
    assert (task.status, task.priority, task.queue, task.attempts) == ("ready", "high", "work", 0)
    assert task.due_at == due and task.owner == Actor(kind="human", ref="ada")
    assert task.data == {"url": "https://example.com/r.pdf"} and task.metadata == {"source": "sdk"}
    assert task.identifier and wl.get_task(task.identifier).id == task.id
    updated = wl.update_task(task.id, title="Summarise the whole report", description=None)
    assert (updated.title, updated.description, updated.priority) == ("Summarise the whole report", None, "high")

    claim = one(wl.claim("work", worker=WORKER))
    assert isinstance(claim.run, Run) and claim.task.id == task.id and claim.task.status == "in_progress"
    assert claim.run.claimed_by == WORKER and claim.run.status == "claimed" and claim.claim_token
    assert 119 <= (claim.lease_until - aware(claim.run.claimed_at)).total_seconds() <= 121
    assert wl.claim("work", worker=WORKER, wait_seconds=0.2) == []  # a short long-poll on an empty queue

    started = wl.start_run(claim.run.id, claim.claim_token)
    assert started.status == "running" and started.started_at is not None
    beat = wl.heartbeat(claim.run.id, claim.claim_token, extend_seconds=3600, progress={"pct": 40})
    assert beat.progress == {"pct": 40} and aware(beat.lease_until) > claim.lease_until
    done = wl.complete_run(claim.run.id, claim.claim_token, result={"summary": "fine"}, usage={"tokens": 12})
    assert done.status == "completed" and done.result == {"summary": "fine"}
    assert wl.get_run(claim.run.id).status == "completed"
    finished = wl.get_task(task.id)
    assert finished.status == "completed" and finished.output == {"summary": "fine"} and finished.closed_at
    assert [(r.attempt, r.status) for r in wl.list_runs(task.id)] == [(1, "completed")]

    events = wl.get_timeline(task.id)
    assert all(isinstance(e, Event) for e in events)
    assert [e.task_sequence for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types[0] == "task.created" and types.count("task.completed") == 1
    assert wl.get_timeline(task.id, after_sequence=2) == events[2:]
    assert wl.get_timeline(task.id, limit=1) == events[:1]

    # a permanent failure, and a release that does not spend an attempt
    failing = wl.create_task("Call the flaky service", queue="work")
    held = one(wl.claim("work", worker=WORKER))
    failed = wl.fail_run(held.run.id, held.claim_token, "boom", retryable=False)
    assert failed.status == "failed" and failed.error == "boom"
    assert wl.get_task(failing.id).status == "failed"

    handed_back = wl.create_task("Hand me back", queue="work")
    held = one(wl.claim("work", worker=WORKER))
    released = wl.release_run(held.run.id, held.claim_token, reason="shift over")
    assert released.status == "canceled" and released.end_reason == "released"
    back = wl.get_task(handed_back.id)
    assert back.status == "ready" and back.attempts == 0


def test_drafts_approvals_children_dependencies_and_tree(wl: Client) -> None:
    draft = wl.create_task("Half-written", queue="ops", draft=True)
    assert (draft.status, draft.draft) == ("draft", True)
    published = wl.publish_task(draft.id)
    assert (published.status, published.draft) == ("ready", False)

    gated = wl.create_task("Deploy", queue="ops", approval_policy="required")
    assert (gated.status, gated.blocked_reason, gated.approval_state) == ("blocked", "approval", "pending")
    approved = wl.approve_task(gated.id, "go")
    assert (approved.status, approved.approval_state) == ("ready", "approved")
    refused = wl.reject_task(wl.create_task("Drop prod", approval_policy="required").id, "no")
    assert (refused.status, refused.approval_state) == ("canceled", "rejected")

    wl.create_queue("by-hand", start_mode="manual")
    waiting = wl.create_task("Only when asked", queue="by-hand")
    assert wl.claim("by-hand", worker=WORKER) == []
    wl.start_task(waiting.id)
    assert one(wl.claim("by-hand", worker=WORKER)).task.id == waiting.id

    parent = wl.create_task("Launch")
    child_a = wl.create_child(parent.id, "Write copy", queue="w")
    child_b = wl.create_child(parent.identifier or parent.id, "Design")
    grandchild = wl.create_child(child_b.id, "Pick font")
    assert child_a.parent_task_id == parent.id and grandchild.parent_task_id == child_b.id
    assert sorted(t.id for t in wl.list_children(parent.id)) == sorted([child_a.id, child_b.id])
    tree = wl.get_tree(parent.id)
    assert isinstance(tree, TaskTree) and tree.task.id == parent.id
    nodes = {node.task.id: node for node in tree.children}
    assert set(nodes) == {child_a.id, child_b.id}
    assert [n.task.id for n in nodes[child_b.id].children] == [grandchild.id]

    first = wl.create_task("Fetch")
    second = wl.create_task("Analyse")
    blocked = wl.add_dependencies(second.id, [first.id])
    assert (blocked.status, blocked.blocked_reason, blocked.depends_on) == ("blocked", "dependencies", [first.id])
    with pytest.raises(ConflictError, match="cycle") as cycle:
        wl.add_dependencies(first.id, [second.id])
    assert cycle.value.status == 409 and isinstance(cycle.value.body, dict) and cycle.value.body["cycle"]
    freed = wl.remove_dependency(second.id, first.id)
    assert (freed.status, freed.depends_on) == ("ready", [])

    canceled = wl.cancel_task(parent.id, "called off")
    assert canceled.status == "canceled"
    assert {wl.get_task(t.id).status for t in (child_a, child_b, grandchild)} == {"canceled"}

    scratch = wl.create_task("Scratch")
    wl.delete_task(scratch.id)
    with pytest.raises(NotFoundError):
        wl.get_task(scratch.id)


# -- pagination -----------------------------------------------------------------------------------------


def test_iter_tasks_walks_every_page_once(wl: Client) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)
    made = [
        wl.create_task(f"{'Invoice' if i % 3 == 0 else 'Chore'} {i}", queue="billing" if i % 2 else "misc",
                       priority="high" if i % 4 == 0 else "low")
        for i in range(23)
    ]  # fmt: skip
    page = wl.list_tasks(limit=5, count=True)
    assert isinstance(page, Page) and len(page.items) == 5 and page.total == 23 and page.next_cursor
    second = wl.list_tasks(limit=5, cursor=page.next_cursor)
    assert not {t.id for t in page.items} & {t.id for t in second.items}

    seen = [t.id for t in wl.iter_tasks(page_size=5)]
    assert len(seen) == len(set(seen)) == 23 and set(seen) == {t.id for t in made}
    oldest_first = [t.id for t in wl.iter_tasks(page_size=4, sort="created_at")]
    assert oldest_first == [t.id for t in made]

    billing = [t for t in wl.iter_tasks(page_size=3, queue="billing")]
    assert {t.id for t in billing} == {t.id for t in made if t.queue == "billing"} and len(billing) == 11
    invoices = list(wl.iter_tasks(page_size=2, q="Invoice", sort=["-priority", "created_at"]))
    assert [t.title for t in invoices[:2]] == ["Invoice 0", "Invoice 12"]
    assert len(invoices) == 8
    assert {t.priority for t in wl.iter_tasks(priority__in=["high"], status__in=["ready", "blocked"])} == {"high"}
    assert len(list(wl.iter_tasks(created_at__gte=before, created_at__lte=datetime.now(UTC)))) == 23
    assert list(wl.iter_tasks(created_at__gte=datetime.now(UTC) + timedelta(days=1))) == []


async def test_async_iter_tasks_walks_every_page_once(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token) as client:
        made = [await client.create_task(f"Task {i}", queue="async") for i in range(12)]
        seen = [t.id async for t in client.iter_tasks(page_size=5, queue="async")]
        assert len(seen) == len(set(seen)) == 12 and set(seen) == {t.id for t in made}
        page = await client.list_tasks(limit=5, count=True, status="ready")
        assert page.total == 12 and len(page.items) == 5


# -- errors and idempotency ------------------------------------------------------------------------------


def test_errors_are_typed_and_carry_the_problem(wl: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        wl.get_task("WL-999")
    assert missing.value.status == 404 and missing.value.code == "not-found"
    assert missing.value.detail and missing.value.detail in str(missing.value)
    assert "\n" not in str(missing.value)

    with pytest.raises(ValidationError) as invalid:
        wl.create_task("Bad priority", priority="extreme")  # type: ignore[arg-type]
    assert invalid.value.status == 422 and invalid.value.code == "validation-error"
    assert [e.field for e in invalid.value.errors] == ["priority"]
    assert "priority:" in str(invalid.value)

    with pytest.raises(ValidationError) as bad_query:
        wl.list_tasks(limit=0)
    assert "limit" in [e.field for e in bad_query.value.errors]

    with pytest.raises(NotFoundError):
        wl.claim("nowhere", worker=WORKER)

    wl.create_task("Hold me", queue="errs")
    claim = one(wl.claim("errs", worker=WORKER))
    with pytest.raises(StaleClaimError) as stale:
        wl.complete_run(claim.run.id, "clm_wrong")
    assert stale.value.status == 409 and isinstance(stale.value, ConflictError)
    assert stale.value.type == "https://workloom.dev/problems/stale-claim"
    wl.complete_run(claim.run.id, claim.claim_token)
    with pytest.raises(StaleClaimError):
        wl.heartbeat(claim.run.id, claim.claim_token)

    plain = wl.create_task("Ungated")
    with pytest.raises(ConflictError) as conflict:
        wl.approve_task(plain.id)
    assert conflict.value.status == 409 and not isinstance(conflict.value, StaleClaimError)


def test_idempotent_repeats_return_the_first_answer(wl: Client) -> None:
    first = wl.create_task("Exactly once", queue="idem", data={"n": 1}, idempotency_key="create-1")
    again = wl.create_task("Exactly once", queue="idem", data={"n": 1}, idempotency_key="create-1")
    assert again == first
    assert wl.list_tasks(q="Exactly once", count=True).total == 1
    with pytest.raises(IdempotencyKeyReusedError) as reused:
        wl.create_task("Exactly once", queue="idem", data={"n": 2}, idempotency_key="create-1")
    assert reused.value.status == 409 and isinstance(reused.value, ConflictError)

    # without an explicit key every call is its own logical call
    assert wl.create_task("Twice", queue="other").id != wl.create_task("Twice", queue="other").id

    c1 = wl.claim("idem", worker=WORKER, idempotency_key="claim-1")
    c2 = wl.claim("idem", worker=WORKER, idempotency_key="claim-1")
    assert c1 == c2 and one(c1).task.id == first.id
    token, run_id = c1[0].claim_token, c1[0].run.id
    r1 = wl.complete_run(run_id, token, result={"ok": True}, idempotency_key="complete-1")
    r2 = wl.complete_run(run_id, token, result={"ok": True}, idempotency_key="complete-1")
    assert r1 == r2 and r1.status == "completed"
    assert [e.type for e in wl.get_timeline(first.id)].count("task.completed") == 1


# -- event streams --------------------------------------------------------------------------------------


def test_streams_replay_and_follow(wl: Client) -> None:
    task = wl.create_task("Watched", queue="watch")
    history = wl.get_timeline(task.id)
    with wl.stream_task(task.id) as stream:
        replayed = [next(stream) for _ in history]
        assert replayed == history
        wl.update_task(task.id, title="Watched closely")
        live = next(stream)
        assert (live.type, live.task_id, live.task_sequence) == ("task.updated", task.id, len(history) + 1)
        assert stream.last_event_id == str(len(history) + 1)

    with wl.stream_task(task.id, after_sequence=len(history)) as stream:
        assert next(stream).type == "task.updated"

    after = history[-1].sequence
    with wl.stream_events(after=after, types=["task.created"]) as stream:
        made = [wl.create_task(f"New {i}") for i in range(3)]
        seen = [next(stream) for _ in made]
    assert [e.task_id for e in seen] == [t.id for t in made]
    assert {e.type for e in seen} == {"task.created"} and all(e.sequence > after for e in seen)

    with pytest.raises(NotFoundError):
        next(wl.stream_task("WL-999"))


def test_stream_resumes_with_last_event_id_after_the_server_restarts(server: ServerProcess) -> None:
    with Client(server.url, server.token, max_retries=200, backoff_base=0.02, backoff_cap=0.2) as client:
        task = client.create_task("Survives a restart", queue="restart")
        history = client.get_timeline(task.id)
        with client.stream_task(task.id) as stream, client.stream_events(after=history[-1].sequence) as everything:
            assert [next(stream) for _ in history] == history
            client.update_task(task.id, title="Before the restart")
            assert next(stream).type == next(everything).type == "task.updated"

            server.terminate()  # ends both streams; the SDK reconnects while the server is down and after
            server.start()
            client.update_task(task.id, title="After the restart")
            resumed = next(stream)
            assert resumed.type == "task.updated" and resumed.task_sequence == len(history) + 2
            follow = next(everything)
            assert follow.type == "task.updated" and follow.sequence == resumed.sequence


# -- the async client -----------------------------------------------------------------------------------


async def test_async_client_covers_every_resource(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token, worker=WORKER) as wl:
        assert await wl.health() == {"status": "ok"}
        queue = await wl.create_queue("aq", initial_interval_seconds=0)
        assert await wl.get_queue("aq") == queue and [q.name for q in await wl.list_queues()] == ["aq"]
        assert (await wl.update_queue("aq", description="async")).description == "async"

        task = await wl.create_task("Async work", queue="aq", data={"n": 1})
        assert (await wl.get_task(task.id)).data == {"n": 1}
        assert (await wl.update_task(task.id, priority="urgent")).priority == "urgent"
        claim = one(await wl.claim("aq", wait_seconds=1))  # the client's default worker
        assert claim.run.claimed_by == WORKER
        await wl.start_run(claim.run.id, claim.claim_token)
        await wl.heartbeat(claim.run.id, claim.claim_token, progress="half")
        done = await wl.complete_run(claim.run.id, claim.claim_token, result=42)
        assert done.status == "completed" and (await wl.get_run(done.id)).result == 42
        assert [r.status for r in await wl.list_runs(task.id)] == ["completed"]
        timeline = await wl.get_timeline(task.id)
        assert timeline[0].type == "task.created"

        other = await wl.create_task("Async fail", queue="aq")
        held = one(await wl.claim("aq"))
        assert (await wl.fail_run(held.run.id, held.claim_token, "nope", retryable=False)).status == "failed"
        assert (await wl.get_task(other.id)).status == "failed"
        await wl.create_task("Async release", queue="aq")
        held = one(await wl.claim("aq"))
        assert (await wl.release_run(held.run.id, held.claim_token)).end_reason == "released"

        draft = await wl.create_task("Async draft", draft=True)
        assert (await wl.publish_task(draft.id)).status == "ready"
        gated = await wl.create_task("Async gate", approval_policy="required")
        assert (await wl.approve_task(gated.id)).approval_state == "approved"
        gated2 = await wl.create_task("Async gate 2", approval_policy="required")
        assert (await wl.reject_task(gated2.id)).status == "canceled"
        await wl.create_queue("aq-manual", start_mode="manual")
        manual = await wl.create_task("Async manual", queue="aq-manual")
        await wl.start_task(manual.id)
        assert one(await wl.claim("aq-manual")).task.id == manual.id

        parent = await wl.create_task("Async parent")
        child = await wl.create_child(parent.id, "Async child")
        assert [t.id for t in await wl.list_children(parent.id)] == [child.id]
        assert [n.task.id for n in (await wl.get_tree(parent.id)).children] == [child.id]
        blocked = await wl.add_dependencies(parent.id, [gated.id])
        assert blocked.depends_on == [gated.id]
        assert (await wl.remove_dependency(parent.id, gated.id)).depends_on == []
        assert (await wl.cancel_task(parent.id)).status == "canceled"
        scratch = await wl.create_task("Async scratch")
        await wl.delete_task(scratch.id)
        with pytest.raises(NotFoundError) as missing:
            await wl.get_task(scratch.id)
        assert missing.value.detail
        with pytest.raises(ValidationError) as invalid:
            await wl.create_queue("bad name with spaces")
        assert [e.field for e in invalid.value.errors] == ["name"]
        with pytest.raises(StaleClaimError):
            await wl.start_run(claim.run.id, "clm_wrong")

        async with wl.stream_task(task.id) as stream:
            replayed = await take(stream, len(timeline))
        assert replayed == timeline
        async with wl.stream_events(after=timeline[-1].sequence, task_id=manual.id) as stream:
            await wl.cancel_task(manual.id)
            event = await stream.__anext__()
        assert event.task_id == manual.id and event.type.startswith(("task.", "run."))


def test_a_key_of_another_workspace_sees_nothing(
    server: ServerProcess, wl: Client, make_key: Callable[[str, str], str]
) -> None:
    task = wl.create_task("Private")
    with Client(server.url, make_key("elsewhere", "admin")) as other:
        with pytest.raises(NotFoundError):
            other.get_task(task.id)
        assert other.list_tasks().items == []
    with Client(server.url, "") as anonymous, pytest.raises(AuthenticationError) as caught:
        anonymous.get_task(task.id)
    assert isinstance(caught.value, WorkloomError) and "401" in str(caught.value)


def test_a_completion_can_wait_for_the_next_run_longer_than_the_clients_timeout(server: ServerProcess) -> None:
    """``complete_and_claim(wait_seconds=…)``: the wait is added to the read timeout, as a claim's is, so a
    wait that finds nothing answers with the completion rather than a timeout; one that does, with the run."""
    with Client(server.url, server.token, worker=WORKER, timeout=0.5, max_retries=0) as wl:
        wl.create_queue("loop")
        wl.create_task("first", queue="loop")
        first = one(wl.claim("loop"))
        run, claims = wl.complete_and_claim(first.run.id, first.claim_token, wait_seconds=1.5)
        assert run.status == "completed" and claims == []

        second = wl.create_task("second", queue="loop")
        held = one(wl.claim("loop"))
        third = wl.create_task("third", queue="loop")
        outcomes, claims = wl.complete_runs_and_claim(
            [(held.run.id, held.claim_token)], "loop", limit=5, wait_seconds=1.5
        )
        assert [o.status for o in outcomes] == ["completed"] and [c.task.id for c in claims] == [third.id]
        assert wl.get_task(second.id).status == "completed"
