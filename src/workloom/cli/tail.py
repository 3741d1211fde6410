"""``workloom tail``: follow the workspace's events as they happen, surviving dropped connections."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import typer
from rich.text import Text

from workloom.cli.http import Hints, connect, unreachable_reason
from workloom.cli.output import actor_label, console, local_time, note, short_payload
from workloom.client import Client, Event, NotFoundError, RateLimitedError, ServerError, TransportError, WorkloomError

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0
KNOWN_TASKS_LIMIT = 10_000


def tail(
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Only this task's events (id or identifier).")
    ] = None,
    types: Annotated[str | None, typer.Option(help="Only these event types, e.g. task.created,run.failed")] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Only events of tasks on this queue (or several as a,b).")
    ] = None,
    after: Annotated[int | None, typer.Option(help="Start after this event sequence (default: from now).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Follow events live (Ctrl-C to stop). Reconnects by itself and resumes where it left off."""
    type_list = split(types)
    queues = set(split(queue))
    hints: Hints = {NotFoundError: "No such task: 'workloom tasks list' shows the tasks your key can see."}
    # the SDK's own reconnection is off (max_retries=0): follow() reconnects, and says so
    with connect(max_retries=0, hints=hints) as client:
        tasks = TaskCache(client)
        try:
            for event in follow(client, task_id=task, types=type_list, after=after):
                data = event.model_dump(mode="json")
                if queues and tasks.queue(data) not in queues:
                    continue
                if json_output:
                    typer.echo(json_line(data))
                else:
                    console.print(event_line(data, tasks.label(data)), soft_wrap=True)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def follow(
    client: Client,
    *,
    task_id: str | None = None,
    types: Sequence[str] | None = None,
    after: int | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[Event]:
    """Events from the stream, forever; after a drop, wait (backing off) and resume after the last id seen.

    ``client`` should not reconnect by itself (``max_retries=0``), so each drop is seen here and told. The
    first connection must open (a wrong URL, key or task is reported at once); later failures are retried,
    except answers that retrying cannot fix (a revoked key: 401).
    """
    pause = sleep or time.sleep
    last, delay, opened, dropped = after, FIRST_RETRY_SECONDS, False, False
    while True:
        stream = client.stream_events(after=last, types=list(types or []) or None, task_id=task_id)
        try:
            for event in stream:
                if dropped:
                    note("Reconnected.")
                    dropped = False
                opened, delay = True, FIRST_RETRY_SECONDS
                last = event.sequence
                yield event
            reason = "the server closed the stream"  # only when the client reconnects by itself
        except TransportError as exc:
            if not (opened or stream.last_event_id is not None):
                raise
            reason = unreachable_reason(exc) if exc.__cause__ is not None else "the server closed the stream"
        except (ServerError, RateLimitedError) as exc:
            if not (opened or stream.last_event_id is not None):
                raise
            reason = f"HTTP {exc.status}"
        finally:
            # the stream announces where it starts, so even a drop before any event resumes without a gap
            last = _sequence(stream.last_event_id, last)
            opened = opened or stream.last_event_id is not None
            stream.close()
        dropped = True
        resume = f", resuming after event {last}" if last is not None else ""
        note(f"Connection lost ({reason}); reconnecting in {delay:.1f}s{resume}.")
        pause(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def _sequence(event_id: str | None, default: int | None) -> int | None:
    try:
        return int(event_id) if event_id is not None else default
    except ValueError:
        return default


def json_line(event: dict[str, Any]) -> str:
    """The event's JSON on one line."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)


def event_style(event_type: str) -> str:
    if event_type.endswith(("failed", "rejected", "late_result")):
        return "red"
    if event_type.endswith(("completed", "approved")):
        return "green"
    return "cyan" if event_type.startswith("task.") else "magenta" if event_type.startswith("run.") else ""


def event_line(event: dict[str, Any], task_label: str = "") -> Text:
    """``12:03:04  task.created   WL-42  human:alice  title=… queue=…``"""
    kind = str(event.get("type", "?"))
    return Text.assemble(
        (local_time(event.get("created_at"), "%H:%M:%S") or "--:--:--", "dim"),
        "  ",
        (f"{kind:<20}", event_style(kind)),
        " ",
        (f"{task_label:<10}", "bold"),
        " ",
        (actor_label(event.get("actor")), "dim"),
        "  ",
        short_payload(event.get("payload"), 100),
    )


class TaskCache:
    """Each task's identifier (``WL-42``) and queue, for events, which carry only the task id: taken from
    the event when it says them, else looked up once per task."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.known: dict[str, tuple[str, str | None]] = {}

    def label(self, event: dict[str, Any]) -> str:
        found = self._get(event)
        return found[0] if found else ""

    def queue(self, event: dict[str, Any]) -> str | None:
        found = self._get(event)
        return found[1] if found else None

    def _get(self, event: dict[str, Any]) -> tuple[str, str | None] | None:
        task_id = event.get("task_id")
        if not task_id:
            return None
        payload = event.get("payload") or {}
        if "queue" in (payload.get("changed") or []):
            self.known.pop(task_id, None)  # moved to another queue: look again
        known = self.known.get(task_id)
        if known is None:
            if len(self.known) >= KNOWN_TASKS_LIMIT:
                self.known.clear()
            identifier = payload.get("identifier")
            if identifier and "queue" in payload:  # task.created says both
                known = (str(identifier), str(payload["queue"]) if payload["queue"] else None)
            else:
                known = self._lookup(task_id)
            self.known[task_id] = known
        return known

    def _lookup(self, task_id: str) -> tuple[str, str | None]:
        try:
            task = self.client.get_task(task_id)
        except WorkloomError:
            return task_id, None
        return task.identifier or task_id, task.queue
