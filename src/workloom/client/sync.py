"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from workloom.client import _calls as calls
from workloom.client._base import ClientBase
from workloom.client._calls import ActorLike, Call, QueueSettings, StreamCall, TaskChanges, TaskFields, TaskFilters
from workloom.client._config import DEFAULT_TIMEOUT
from workloom.client._sse import EventStream, SseDecoder
from workloom.client.models import Claim, Event, Page, Queue, Run, RunOutcome, Task, TaskTree

T = TypeVar("T")


class Client(ClientBase):
    """A Workloom server's native API, synchronously.

    ``base_url`` and ``api_key`` default to ``WORKLOOM_URL`` (else ``http://127.0.0.1:8000``) and
    ``WORKLOOM_API_KEY``. ``timeout`` is in seconds (a long-poll claim adds its ``wait_seconds`` to the read
    timeout). Connection failures, 429 and 503 are retried up to ``max_retries`` times with jittered
    exponential backoff between ``backoff_base`` and ``backoff_cap`` seconds, or after ``Retry-After``;
    every creating or transition call sends an ``Idempotency-Key`` so its retries are safe. ``worker`` is
    the actor claims name by default; ``transport`` and ``sleep`` are for tests.

    Use it as a context manager, or call ``close()``::

        with Client() as wl:
            task = wl.create_task("Summarise the report", queue="work")
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        headers: Mapping[str, str] | None = None,
        worker: ActorLike | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout=timeout, max_retries=max_retries, backoff_base=backoff_base,
            backoff_cap=backoff_cap, worker=worker,
        )  # fmt: skip
        self._sleep = sleep or time.sleep
        self._http = httpx.Client(transport=transport, **self._client_options(headers))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- execution --------------------------------------------------------------------------------------

    def _call(self, call: Call[T]) -> T:
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.send(self._http.build_request(**self._request_args(call)))
            except httpx.TransportError as exc:
                delay = attempts.after_error(exc)
            else:
                wait = attempts.after_response(response)
                if wait is None:
                    return call.result(response)
                delay = wait
            self._sleep(delay)

    def _stream(self, stream: StreamCall) -> EventStream:
        decoder = SseDecoder()
        return EventStream(self._follow(stream, decoder), decoder)

    def _follow(self, stream: StreamCall, decoder: SseDecoder) -> Generator[Event, None, None]:
        reconnects = self._reconnects()
        while True:
            request = self._http.build_request(**self._stream_args(stream, decoder.last_event_id))
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                self._sleep(reconnects.dropped(exc))
                continue
            try:
                if response.is_error:
                    response.read()
                    delay = reconnects.refused(response)
                else:
                    reconnects.opened()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        if event is not None:
                            yield event
                    delay = reconnects.dropped()
            except httpx.TransportError as exc:
                delay = reconnects.dropped(exc)
            finally:
                response.close()
            decoder.reset()
            self._sleep(delay)

    # -- operations -------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` while the server process is up."""
        return self._call(calls.health())

    # -- queues -----------------------------------------------------------------------------------------

    def create_queue(
        self, name: str, *, idempotency_key: str | None = None, **settings: Unpack[QueueSettings]
    ) -> Queue:
        """Create a queue; unnamed settings take the server's defaults."""
        return self._call(calls.create_queue(name, settings, idempotency_key))

    def list_queues(self) -> list[Queue]:
        """Every queue of the workspace."""
        return self._call(calls.list_queues())

    def get_queue(self, name: str) -> Queue:
        """One queue by name."""
        return self._call(calls.get_queue(name))

    def update_queue(self, name: str, **changes: Unpack[QueueSettings]) -> Queue:
        """Change the named settings of a queue."""
        return self._call(calls.update_queue(name, changes))

    def claim(
        self,
        queue: str,
        *,
        worker: ActorLike | None = None,
        limit: int = 1,
        lease_seconds: int | None = None,
        wait_seconds: float = 0,
        idempotency_key: str | None = None,
        start: bool = False,
    ) -> list[Claim]:
        """Claim up to ``limit`` runs from ``queue`` (waiting up to ``wait_seconds`` for one); ``[]`` if none.
        ``start``: the runs come back running, as if ``start_run`` had been called on each (a worker that
        begins its handlers as its claims arrive saves that call)."""
        return self._call(
            calls.claim(queue, worker or self.worker, limit, lease_seconds, wait_seconds, idempotency_key, start)
        )

    # -- tasks ------------------------------------------------------------------------------------------

    def create_task(self, title: str, *, idempotency_key: str | None = None, **fields: Unpack[TaskFields]) -> Task:
        """Create a task (a named queue that does not exist is created with defaults)."""
        return self._call(calls.create_task(title, fields, idempotency_key))

    def create_tasks(self, tasks: Sequence[calls.NewTaskLike], *, idempotency_key: str | None = None) -> list[Task]:
        """Create up to 1000 tasks in one transaction (all or none), numbered in the order given: each a
        title, or a mapping of ``title`` and the fields of ``create_task``."""
        return self._call(calls.create_tasks(tasks, idempotency_key))

    def complete_runs_and_claim(
        self,
        runs: Sequence[calls.CompletionLike],
        queue: str,
        *,
        worker: ActorLike | None = None,
        limit: int = 1,
        lease_seconds: int | None = None,
        wait_seconds: float = 0.0,
        idempotency_key: str | None = None,
        start: bool = False,
    ) -> tuple[list[RunOutcome], list[Claim]]:
        """``complete_runs``, and in the same transaction claim up to ``limit`` runs of ``queue`` (what is
        claimable now): a worker's batch loop in one request and one commit per batch. With ``wait_seconds``,
        when there was nothing to claim, the call waits up to that long for a run (a long-poll, as ``claim``).
        ``start``: the runs claimed come back running (as ``claim``'s)."""
        return self._call(
            calls.complete_runs_and_claim(
                runs, queue, worker or self.worker, limit, lease_seconds, idempotency_key, wait_seconds, start
            )
        )

    def complete_runs(
        self, runs: Sequence[calls.CompletionLike], *, idempotency_key: str | None = None
    ) -> list[RunOutcome]:
        """Complete up to 1000 held runs in one transaction, each on its own: items are
        ``(run_id, claim_token)`` or ``(run_id, claim_token, result)``; each outcome says ``completed``
        or carries the refusal (``outcome.exception``)."""
        return self._call(calls.complete_runs(runs, idempotency_key))

    def get_task(self, task_id: str) -> Task:
        """One task by id or identifier (``WL-42``)."""
        return self._call(calls.get_task(task_id))

    def list_tasks(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        count: bool = False,
        **filters: Unpack[TaskFilters],
    ) -> Page[Task]:
        """One page of tasks; pass ``next_cursor`` back as ``cursor`` (with the same filters) for the next."""
        return self._call(calls.list_tasks(filters, limit, cursor, count))

    def iter_tasks(self, *, page_size: int = 100, **filters: Unpack[TaskFilters]) -> Iterator[Task]:
        """Every task matching ``filters``, fetching pages of ``page_size`` as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def update_task(self, task_id: str, **changes: Unpack[TaskChanges]) -> Task:
        """Change the named fields of a task; ``None`` clears a nullable field."""
        return self._call(calls.update_task(task_id, changes))

    def delete_task(self, task_id: str) -> None:
        """Delete a task."""
        self._call(calls.delete_task(task_id))

    def publish_task(self, task_id: str, *, idempotency_key: str | None = None) -> Task:
        """Turn a draft into live work."""
        return self._call(calls.transition(task_id, "publish", idempotency_key))

    def approve_task(self, task_id: str, comment: str | None = None, *, idempotency_key: str | None = None) -> Task:
        """Approve a task waiting for approval."""
        return self._call(calls.transition(task_id, "approve", idempotency_key, comment=comment))

    def reject_task(self, task_id: str, reason: str | None = None, *, idempotency_key: str | None = None) -> Task:
        """Reject a task waiting for approval (it is canceled)."""
        return self._call(calls.transition(task_id, "reject", idempotency_key, reason=reason))

    def cancel_task(self, task_id: str, reason: str | None = None, *, idempotency_key: str | None = None) -> Task:
        """Cancel a task that is not yet closed."""
        return self._call(calls.transition(task_id, "cancel", idempotency_key, reason=reason))

    def start_task(self, task_id: str, *, idempotency_key: str | None = None) -> Task:
        """Enqueue a ready task of a manual-start queue."""
        return self._call(calls.transition(task_id, "start", idempotency_key))

    def list_children(self, task_id: str) -> list[Task]:
        """The task's direct children."""
        return self._call(calls.list_children(task_id))

    def create_child(
        self, task_id: str, title: str, *, idempotency_key: str | None = None, **fields: Unpack[TaskFields]
    ) -> Task:
        """Create a task whose parent is ``task_id``."""
        return self._call(calls.create_child(task_id, title, fields, idempotency_key))

    def add_dependencies(self, task_id: str, depends_on: Sequence[str]) -> Task:
        """Make the task wait for others (``ConflictError`` naming the cycle if one would form)."""
        return self._call(calls.add_dependencies(task_id, depends_on))

    def remove_dependency(self, task_id: str, depends_on_id: str) -> Task:
        """Stop the task waiting for ``depends_on_id``."""
        return self._call(calls.remove_dependency(task_id, depends_on_id))

    def get_tree(self, task_id: str) -> TaskTree:
        """The task with its descendants."""
        return self._call(calls.get_tree(task_id))

    def list_runs(self, task_id: str) -> list[Run]:
        """Every run (attempt) of the task."""
        return self._call(calls.list_runs(task_id))

    def get_timeline(self, task_id: str, *, after_sequence: int = 0, limit: int | None = None) -> list[Event]:
        """The task's events in order, after ``after_sequence`` (a ``task_sequence``)."""
        return self._call(calls.get_timeline(task_id, after_sequence, limit))

    # -- runs -------------------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        """One run by id."""
        return self._call(calls.get_run(run_id))

    def start_run(self, run_id: str, claim_token: str, *, idempotency_key: str | None = None) -> Run:
        """Mark a claimed run as running."""
        return self._call(calls.run_action(run_id, "start", idempotency_key, claim_token=claim_token))

    def start_runs(self, runs: Sequence[tuple[str, str]], *, idempotency_key: str | None = None) -> list[RunOutcome]:
        """Start up to 1000 held runs in one transaction, each on its own: items are ``(run_id, claim_token)``;
        each outcome says ``running`` or carries the refusal (``outcome.exception``)."""
        return self._call(calls.start_runs(runs, idempotency_key))

    def heartbeat(
        self,
        run_id: str,
        claim_token: str,
        *,
        extend_seconds: int | None = None,
        progress: Any = None,
        usage: Mapping[str, Any] | None = None,
    ) -> Run:
        """Extend the lease (by ``extend_seconds``, else the queue's lease) and report progress and usage."""
        return self._call(calls.heartbeat(run_id, claim_token, extend_seconds, progress, usage))

    def heartbeat_runs(self, runs: Sequence[calls.BeatLike]) -> list[RunOutcome]:
        """Heartbeat up to 1000 held runs in one transaction, each on its own: items are ``(run_id,
        claim_token)`` or mappings of ``run_id``, ``claim_token`` and any of ``extend_seconds``, ``progress``,
        ``usage``; each outcome has the run's ``lease_until``, or the refusal (``outcome.exception``)."""
        return self._call(calls.heartbeat_runs(runs))

    def complete_and_claim(
        self,
        run_id: str,
        claim_token: str,
        *,
        result: Any = None,
        usage: Mapping[str, Any] | None = None,
        limit: int = 1,
        lease_seconds: int | None = None,
        wait_seconds: float = 0.0,
        idempotency_key: str | None = None,
        start: bool = False,
    ) -> tuple[Run, list[Claim]]:
        """Finish the run and, in the same transaction, claim up to ``limit`` more runs of its queue for the
        worker that held it (what is claimable now; ``[]`` when there is none). With ``wait_seconds``, when
        there was nothing to claim, the call waits up to that long for a run: a worker's whole loop, complete
        and take the next, in one request. ``start``: the runs claimed come back running (as ``claim``'s)."""
        return self._call(
            calls.complete_and_claim(
                run_id, claim_token, result, usage, limit, lease_seconds, idempotency_key, wait_seconds, start
            )
        )

    def complete_run(
        self,
        run_id: str,
        claim_token: str,
        *,
        result: Any = None,
        usage: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Finish the run successfully; ``result`` becomes the task's output."""
        return self._call(
            calls.run_action(run_id, "complete", idempotency_key, claim_token=claim_token, result=result, usage=usage)
        )

    def fail_run(
        self, run_id: str, claim_token: str, error: str, *, retryable: bool = True, idempotency_key: str | None = None
    ) -> Run:
        """Fail the run; a retryable failure queues another attempt while attempts remain."""
        return self._call(
            calls.run_action(run_id, "fail", idempotency_key, claim_token=claim_token, error=error, retryable=retryable)
        )

    def release_run(
        self, run_id: str, claim_token: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Run:
        """Give the run back without it counting as a failure."""
        return self._call(calls.run_action(run_id, "release", idempotency_key, claim_token=claim_token, reason=reason))

    # -- events -----------------------------------------------------------------------------------------

    def stream_events(
        self, *, after: int | None = None, types: Sequence[str] | None = None, task_id: str | None = None
    ) -> EventStream:
        """The workspace's events as they happen (after global sequence ``after``, else from now), optionally
        only some ``types`` or one task's; reconnects with ``Last-Event-ID`` when the connection drops."""
        return self._stream(calls.stream_events(after, types, task_id))

    def stream_task(self, task_id: str, *, after_sequence: int = 0) -> EventStream:
        """One task's events from ``after_sequence`` (a ``task_sequence``) on, then as they happen."""
        return self._stream(calls.stream_task(task_id, after_sequence))
