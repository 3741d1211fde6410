"""``workloom tasks``: create, list and inspect tasks through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.text import Text

from workloom.cli.http import connect
from workloom.cli.output import console, fail, note, print_json
from workloom.cli.task_views import run_table, status_text, task_panel, task_table, timeline_table

app = typer.Typer(help="Create, list and inspect tasks (through the API).", no_args_is_help=True)

JsonOutput = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text.")]
PRIORITIES = ("low", "medium", "high", "urgent")


def parse_data(raw: str | None) -> Any:
    """``--data`` as JSON; a mistake is reported with where it is."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON: {exc.msg} at character {exc.pos}.", hint='Example: --data \'{"url": "…"}\'')


def split_ids(values: list[str] | None) -> list[str]:
    """``--depends-on A --depends-on B,C`` → ``[A, B, C]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def list_filter(name: str, value: str | None) -> dict[str, str]:
    """A filter for one value, or ``name__in`` for a comma-separated list."""
    if value is None:
        return {}
    return {f"{name}__in": value} if "," in value else {name: value}


@app.command()
def create(
    title: Annotated[str, typer.Argument(help="What needs doing.")],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue to put it on (created if new).")] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p", help="low, medium, high or urgent.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="Longer text.")] = None,
    data: Annotated[str | None, typer.Option(help="Input for the task, as a JSON object.")] = None,
    draft: Annotated[bool, typer.Option("--draft", help="Create as a draft (publish it later).")] = False,
    depends_on: Annotated[
        list[str] | None, typer.Option("--depends-on", help="A task that must complete first (repeatable).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes retrying this command safe: a repeat returns the same task.")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Create a task."""
    if priority is not None and priority not in PRIORITIES:
        fail(f"--priority must be one of {', '.join(PRIORITIES)}, not {priority!r}.")
    body: dict[str, Any] = {"title": title}
    optional = {"queue": queue, "priority": priority, "description": description, "data": parse_data(data)}
    body.update({key: value for key, value in optional.items() if value is not None})
    if draft:
        body["draft"] = True
    if depends_on:
        body["depends_on"] = split_ids(depends_on)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with connect() as api:
        task = api.post("/v1/tasks", body, headers=headers)
    if json_output:
        print_json(task)
        return
    console.print(
        Text.assemble(
            "Created ",
            (str(task.get("identifier", "")), "bold"),
            " ",
            status_text(task),
            f" on queue {task.get('queue')}" if task.get("queue") else "",
            f" ({task.get('id')})",
        ),
        soft_wrap=True,
    )


@app.command("list")
def list_tasks(
    status: Annotated[str | None, typer.Option("--status", "-s", help="Status, or several as a,b.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Queue name, or several as a,b.")] = None,
    q: Annotated[str | None, typer.Option("--q", help="Search in titles and identifiers.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many tasks.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Next page: the cursor a previous listing printed.")] = None,
    sort: Annotated[str | None, typer.Option(help="e.g. -priority,created_at")] = None,
    json_output: JsonOutput = False,
) -> None:
    """List tasks, newest first unless --sort says otherwise."""
    params: dict[str, Any] = {"q": q, "limit": limit, "cursor": cursor, "sort": sort}
    params.update(list_filter("status", status))
    params.update(list_filter("queue", queue))
    with connect() as api:
        page = api.get("/v1/tasks", params)
    tasks: list[dict[str, Any]] = page.get("items", [])
    if json_output:
        print_json(page)
        return
    if not tasks:
        note("No tasks match." if (status or queue or q) else "No tasks yet: 'workloom tasks create TITLE' adds one.")
        return
    console.print(task_table(tasks))
    if page.get("next_cursor"):
        note(f"More tasks: add --cursor {page['next_cursor']}")


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="Task id or identifier (WL-42).")],
    json_output: JsonOutput = False,
) -> None:
    """Show one task with its runs and timeline."""
    with connect() as api:
        task = api.get(f"/v1/tasks/{quote(task_id, safe='')}")
        runs = api.get(f"/v1/tasks/{task['id']}/runs").get("items", [])
        timeline = api.get(f"/v1/tasks/{task['id']}/timeline").get("items", [])
    if json_output:
        print_json({"task": task, "runs": runs, "timeline": timeline})
        return
    console.print(task_panel(task))
    if runs:
        console.print(run_table(runs))
    if timeline:
        console.print(timeline_table(timeline))
