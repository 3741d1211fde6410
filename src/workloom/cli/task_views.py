"""How tasks, runs and timelines look in a terminal (Rich tables and panels built from API JSON)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from workloom.cli.output import (
    PRIORITY_STYLES,
    RUN_STATUS_STYLES,
    TASK_STATUS_STYLES,
    actor_label,
    age,
    compact,
    local_time,
    short_payload,
    styled,
    truncate,
    when,
)


def status_text(task: dict[str, Any]) -> Text:
    text = styled(task.get("status"), TASK_STATUS_STYLES)
    if task.get("blocked_reason"):
        text.append(f" ({task['blocked_reason']})", style="dim")
    return text


def task_table(tasks: list[dict[str, Any]], now: datetime | None = None) -> Table:
    table = Table("id", "status", "priority", "queue", "title", "age")
    for task in tasks:
        table.add_row(
            str(task.get("identifier") or task.get("id", "")),
            status_text(task),
            styled(task.get("priority"), PRIORITY_STYLES),
            str(task.get("queue") or ""),
            truncate(str(task.get("title", "")), 60),
            age(task.get("created_at"), now),
        )
    return table


def _json_block(value: Any) -> Text:
    return Text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def task_panel(task: dict[str, Any]) -> Panel:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    limit = task.get("max_attempts")
    attempts = f"{task.get('attempts', 0)} of {limit if limit is not None else 'the queue default'}"
    rows: list[tuple[str, RenderableType | str | None]] = [
        ("status", status_text(task)),
        ("priority", styled(task.get("priority"), PRIORITY_STYLES)),
        ("queue", task.get("queue")),
        ("attempts", attempts),
        ("approval", f"{task.get('approval_policy')} / {task.get('approval_state')}"),
        ("owner", actor_label(task.get("owner"))),
        ("created by", actor_label(task.get("created_by"))),
        ("parent", task.get("parent_task_id")),
        ("depends on", ", ".join(task.get("depends_on") or [])),
        ("due", local_time(task.get("due_at"))),
        ("created", f"{local_time(task.get('created_at'))} ({age(task.get('created_at'))} ago)"),
        ("updated", local_time(task.get("updated_at"))),
        ("closed", local_time(task.get("closed_at"))),
        ("id", task.get("id")),
    ]
    for label, value in rows:
        if value:
            fields.add_row(label, value)
    parts: list[RenderableType] = [fields]
    if task.get("description"):
        parts += [Text(""), Text(str(task["description"]))]
    for key in ("data", "output", "error", "metadata"):
        if task.get(key):
            parts += [Text(""), Text(key, style="bold"), _json_block(task[key])]
    title = Text.assemble((str(task.get("identifier", "")), "bold"), "  ", str(task.get("title", "")))
    return Panel(Group(*parts), title=title, title_align="left")


def run_table(runs: list[dict[str, Any]], title: str = "Runs") -> Table:
    table = Table("attempt", "status", "claimed by", "started", "ended", "outcome", "run id", title=title)
    table.columns[-1].overflow = "fold"
    for run in runs:
        outcome = run.get("error") or run.get("end_reason") or run.get("result")
        table.add_row(
            str(run.get("attempt", "")),
            styled(run.get("status"), RUN_STATUS_STYLES),
            str((run.get("claimed_by") or {}).get("ref", "")),
            when(run.get("started_at") or run.get("claimed_at")),
            when(run.get("ended_at")),
            truncate(compact(outcome), 50) if outcome else "",
            str(run.get("id", "")),
        )
    return table


def run_panel(run: dict[str, Any], task_label: str = "") -> Panel:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, RenderableType | str | None]] = [
        ("status", styled(run.get("status"), RUN_STATUS_STYLES)),
        ("task", f"{task_label} ({run.get('task_id')})" if task_label else run.get("task_id")),
        ("queue", run.get("queue")),
        ("attempt", str(run.get("attempt", ""))),
        ("claimed by", actor_label(run.get("claimed_by"))),
        ("available", local_time(run.get("available_at"))),
        ("claimed", local_time(run.get("claimed_at"))),
        ("started", local_time(run.get("started_at"))),
        ("heartbeat", local_time(run.get("heartbeat_at"))),
        ("lease until", local_time(run.get("lease_until"))),
        ("ended", local_time(run.get("ended_at"))),
        ("end reason", run.get("end_reason")),
        ("error", run.get("error")),
        ("id", run.get("id")),
    ]
    for label, value in rows:
        if value:
            fields.add_row(label, value)
    parts: list[RenderableType] = [fields]
    for key in ("progress", "usage", "result", "metadata"):
        if run.get(key) not in (None, {}, []):
            parts += [Text(""), Text(key, style="bold"), _json_block(run[key])]
    title = Text.assemble(("Run", "bold"), f" {run.get('attempt', '')}", f" of {task_label}" if task_label else "")
    return Panel(Group(*parts), title=title, title_align="left")


def timeline_table(events: list[dict[str, Any]]) -> Table:
    table = Table("#", "time", "event", "actor", "details", title="Timeline")
    for event in events:
        table.add_row(
            str(event.get("task_sequence") or event.get("sequence", "")),
            when(event.get("created_at")),
            str(event.get("type", "")),
            actor_label(event.get("actor")),
            short_payload(event.get("payload"), 60),
        )
    return table
