"""Printing for every command: the consoles, failures as one red line, JSON, and the small formatters
(status colours, ages, short payloads) that tables and the event tail share."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

# Rich resolves sys.stdout / sys.stderr when printing, so these follow redirection (and CliRunner).
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

TASK_STATUS_STYLES = {
    "draft": "dim",
    "blocked": "yellow",
    "scheduled": "cyan",
    "ready": "blue",
    "in_progress": "bold magenta",
    "on_hold": "yellow",
    "completed": "green",
    "failed": "bold red",
    "skipped": "dim",
    "canceled": "dim",
}
RUN_STATUS_STYLES = {
    "queued": "cyan",
    "claimed": "blue",
    "starting": "blue",
    "running": "bold magenta",
    "completed": "green",
    "failed": "bold red",
    "canceled": "dim",
}
PRIORITY_STYLES = {"low": "dim", "medium": "", "high": "yellow", "urgent": "bold red"}


def fail(message: str, *, hint: str | None = None) -> NoReturn:
    """Print one red line (plus an optional hint saying what to do) and exit with status 1."""
    err_console.print(Text(message, style="bold red"), soft_wrap=True)
    if hint:
        err_console.print(Text(hint, style="dim"), soft_wrap=True)
    raise typer.Exit(1)


def note(message: str) -> None:
    """A side remark for people (stderr), kept out of output that scripts read."""
    err_console.print(Text(message, style="dim"), soft_wrap=True)


def print_json(data: Any) -> None:
    """Plain JSON on stdout, never wrapped or coloured, so it can be piped into ``jq``."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def styled(value: str | None, styles: dict[str, str]) -> Text:
    value = value or ""
    return Text(value, style=styles.get(value, ""))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: str | None, now: datetime | None = None) -> str:
    """How long ago an ISO timestamp was, in the largest whole unit: ``42s``, ``5m``, ``3h``, ``2d``."""
    then = parse_time(value)
    if then is None:
        return ""
    seconds = max(int(((now or datetime.now(UTC)) - then).total_seconds()), 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def local_time(value: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    then = parse_time(value)
    return then.astimezone().strftime(fmt) if then else ""


def when(value: str | None, now: datetime | None = None) -> str:
    """A timestamp as short as is clear: the time alone for today, else date and minutes."""
    then = parse_time(value)
    if then is None:
        return ""
    local = then.astimezone()
    today = (now or datetime.now(UTC)).astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")


def number(value: Any) -> str:
    """``300.0`` → ``300``, ``1.5`` → ``1.5``; anything else as text."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value is not None else "?"


def compact(value: Any) -> str:
    """A value as it reads in one line: strings bare, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def short_payload(payload: dict[str, Any] | None, width: int = 80) -> str:
    """``key=value`` pairs of the non-empty payload fields, cut to ``width`` characters."""
    if not payload:
        return ""
    parts = [f"{key}={compact(value)}" for key, value in payload.items() if value not in (None, "", [], {})]
    return truncate(" ".join(parts), width)


def actor_label(actor: dict[str, Any] | None) -> str:
    if not actor:
        return ""
    return f"{actor.get('kind', '?')}:{actor.get('ref', '?')}"
