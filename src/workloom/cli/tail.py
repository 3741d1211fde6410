"""``workloom tail``: follow the workspace's events as they happen, surviving dropped connections."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.text import Text

from workloom.cli.http import Api, ApiError, Unreachable, connect
from workloom.cli.output import actor_label, console, local_time, note, short_payload
from workloom.cli.sse import SseEvent, SseParser

STREAM_PATH = "/v1/events/stream"
# The server sends keep-alive comments well within this; silence this long means a dead connection.
READ_TIMEOUT_SECONDS = 60.0
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0
KNOWN_TASKS_LIMIT = 10_000


def tail(
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Only this task's events (id or identifier).")
    ] = None,
    types: Annotated[str | None, typer.Option(help="Only these event types, e.g. task.created,run.failed")] = None,
    after: Annotated[int | None, typer.Option(help="Start after this event sequence (default: from now).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One raw JSON event per line.")] = False,
) -> None:
    """Follow events live (Ctrl-C to stop). Reconnects by itself and resumes where it left off."""
    params = {"task_id": task, "types": types}
    with connect() as api:
        labels = TaskLabels(api)
        try:
            for event in follow(api, params, after):
                if json_output:
                    typer.echo(json_line(event))
                else:
                    data = _decode(event)
                    console.print(event_line(data, labels.label(data)), soft_wrap=True)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def follow(api: Api, params: dict[str, Any], after: int | None = None) -> Iterator[SseEvent]:
    """Events from the stream, forever; after a drop, wait (backing off) and resume after the last id seen.

    The first connection must succeed (a wrong URL or key is reported at once); later failures are retried.
    """
    parser = SseParser(last_event_id=str(after) if after is not None else None)
    delay, connected = FIRST_RETRY_SECONDS, False
    while True:
        headers = {"Accept": "text/event-stream"}
        if parser.last_event_id is not None:
            headers["Last-Event-ID"] = parser.last_event_id
        try:
            with api.stream(
                STREAM_PATH, {**params, "after": parser.last_event_id}, headers, READ_TIMEOUT_SECONDS
            ) as response:
                if connected:
                    note("Reconnected.")
                connected = True
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        delay = FIRST_RETRY_SECONDS
                        yield event
            reason = "the server closed the stream"
        except Unreachable as exc:
            if not connected:
                raise
            reason = exc.reason
        except ApiError as exc:
            if not connected or exc.status < 500:
                raise
            reason = f"HTTP {exc.status}"
        parser.reset_partial()
        wait = max(delay, (parser.retry_ms or 0) / 1000)
        resume = f", resuming after event {parser.last_event_id}" if parser.last_event_id else ""
        note(f"Connection lost ({reason}); reconnecting in {wait:.1f}s{resume}.")
        time.sleep(wait)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def _decode(event: SseEvent) -> dict[str, Any]:
    try:
        data = event.json()
    except ValueError:
        return {"type": event.event, "payload": {"data": event.data}}
    return data if isinstance(data, dict) else {"type": event.event, "payload": {"data": data}}


def json_line(event: SseEvent) -> str:
    """The event's JSON on one line (the raw data if it is not JSON)."""
    try:
        return json.dumps(event.json(), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return event.data.replace("\n", " ")


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


class TaskLabels:
    """Task identifiers (``WL-42``) for events, which carry only the task id; looked up once per task."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.known: dict[str, str] = {}

    def label(self, event: dict[str, Any]) -> str:
        task_id = event.get("task_id")
        if not task_id:
            return ""
        if task_id not in self.known:
            if len(self.known) >= KNOWN_TASKS_LIMIT:
                self.known.clear()
            identifier = (event.get("payload") or {}).get("identifier")
            self.known[task_id] = str(identifier) if identifier else self._lookup(task_id)
        return self.known[task_id]

    def _lookup(self, task_id: str) -> str:
        try:
            task = self.api.get(f"/v1/tasks/{task_id}")
        except (ApiError, Unreachable):
            return task_id
        return str(task.get("identifier") or task_id) if isinstance(task, dict) else task_id
