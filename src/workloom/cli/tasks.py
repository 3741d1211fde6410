"""``workloom tasks``: create, list, inspect and cancel tasks through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import typer
from rich.text import Text

from workloom.cli.http import Hints, connect
from workloom.cli.output import console, fail, note, print_json
from workloom.cli.task_views import run_table, status_text, task_panel, task_table, timeline_table
from workloom.client import ConflictError, NotFoundError, Task, TaskFields, TaskFilters

app = typer.Typer(help="Create, list, inspect and cancel tasks (through the API).", no_args_is_help=True)

JsonOutput = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text.")]
TaskId = Annotated[str, typer.Argument(metavar="ID", help="Task id or identifier (WL-42).")]
PRIORITIES = ("low", "medium", "high", "urgent")
NOT_FOUND_HINT = "Check the id: 'workloom tasks list' shows the tasks your key can see."


def parse_data(raw: str | None, option: str = "--data") -> Any:
    """``--data`` as JSON; a mistake is reported with where it is."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON: {exc.msg} at character {exc.pos}.", hint='Example: --data \'{"url": "…"}\'')


def split_ids(values: list[str] | None) -> list[str]:
    """``--depends-on A --depends-on B,C`` → ``[A, B, C]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def list_filter(name: str, value: str | None) -> dict[str, Any]:
    """A filter for one value, or ``name__in`` for a comma-separated list."""
    if value is None:
        return {}
    if "," in value:
        return {f"{name}__in": [part.strip() for part in value.split(",") if part.strip()]}
    return {name: value}


def parse_actor(value: str, option: str = "--owner") -> dict[str, str]:
    """``kind:ref`` (``human:alice``) as an actor; a mistake says what the form is."""
    kind, sep, ref = value.partition(":")
    if not sep or not kind.strip() or not ref.strip():
        fail(f"{option} must be KIND:REF, e.g. human:alice or agent_session:drafter, not {value!r}.")
    return {"kind": kind.strip(), "ref": ref.strip()}


def owner_filters(value: str | None) -> dict[str, Any]:
    """``--owner human:alice`` filters on kind and ref; ``--owner alice`` on the ref alone."""
    if value is None:
        return {}
    if ":" not in value:
        return list_filter("owner_ref", value)
    actor = parse_actor(value)
    return {"owner_kind": actor["kind"], "owner_ref": actor["ref"]}


def task_json(task: Task) -> dict[str, Any]:
    return task.model_dump(mode="json")


@app.command()
def create(
    title: Annotated[str, typer.Argument(help="What needs doing.")],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue to put it on (created if new).")] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p", help="low, medium, high or urgent.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="Longer text.")] = None,
    data: Annotated[str | None, typer.Option(help="Input for the task, as JSON.")] = None,
    owner: Annotated[str | None, typer.Option(help="Who owns it, as KIND:REF (e.g. human:alice).")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before it fails (default: the queue's).")] = None,
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
    fields: TaskFields = {}
    if queue is not None:
        fields["queue"] = queue
    if priority is not None:
        fields["priority"] = cast(Any, priority)  # the server checks it and names the field if it is wrong
    if description is not None:
        fields["description"] = description
    if data is not None:
        fields["data"] = parse_data(data)
    if owner is not None:
        fields["owner"] = parse_actor(owner)
    if max_attempts is not None:
        fields["max_attempts"] = max_attempts
    if draft:
        fields["draft"] = True
    if depends_on:
        fields["depends_on"] = split_ids(depends_on)
    with connect(hints={NotFoundError: "A task named in --depends-on does not exist; check its id."}) as client:
        task = client.create_task(title, idempotency_key=idempotency_key, **fields)
    if json_output:
        print_json(task_json(task))
        return
    console.print(
        Text.assemble(
            "Created ",
            (task.identifier or task.id, "bold"),
            " ",
            status_text(task_json(task)),
            f" on queue {task.queue}" if task.queue else "",
            f" ({task.id})",
        ),
        soft_wrap=True,
    )


@app.command("list")
def list_tasks(
    status: Annotated[str | None, typer.Option("--status", "-s", help="Status, or several as a,b.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue name, or several as a,b.")] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p", help="Priority, or several as a,b.")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner as KIND:REF (human:alice), or just the REF (alice, or a,b).")
    ] = None,
    q: Annotated[str | None, typer.Option("--q", help="Search in titles and identifiers.")] = None,
    sort: Annotated[
        str | None, typer.Option(help="e.g. -priority,created_at (created_at, updated_at, priority, status, title).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many tasks (a page, with --all).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Next page: the cursor a previous listing printed.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every matching task, fetching page after page.")] = False,
    json_output: JsonOutput = False,
) -> None:
    """List tasks, newest first unless --sort says otherwise."""
    raw: dict[str, Any] = {"q": q, "sort": sort}
    raw.update(list_filter("status", status))
    raw.update(list_filter("queue", queue))
    raw.update(list_filter("priority", priority))
    raw.update(owner_filters(owner))
    filters = cast(TaskFilters, {key: value for key, value in raw.items() if value is not None})
    with connect() as client:
        if all_pages:
            tasks = list(client.iter_tasks(page_size=limit, **filters))
            next_cursor = None
        else:
            page = client.list_tasks(limit=limit, cursor=cursor, **filters)
            tasks, next_cursor = page.items, page.next_cursor
    items = [task_json(task) for task in tasks]
    if json_output:
        print_json({"items": items, "next_cursor": next_cursor})
        return
    if not items:
        filtered = any(v is not None for v in (status, queue, priority, owner, q))
        note("No tasks match." if filtered else "No tasks yet: 'workloom tasks create TITLE' adds one.")
        return
    console.print(task_table(items))
    if next_cursor:
        note(f"More tasks: add --cursor {next_cursor} (or --all for every page)")


@app.command()
def show(task_id: TaskId, json_output: JsonOutput = False) -> None:
    """Show one task with its runs and timeline."""
    with connect(hints={NotFoundError: NOT_FOUND_HINT}) as client:
        task = client.get_task(task_id)
        runs = client.list_runs(task.id)
        timeline = client.get_timeline(task.id)
    run_items = [run.model_dump(mode="json") for run in runs]
    events = [event.model_dump(mode="json") for event in timeline]
    if json_output:
        print_json({"task": task_json(task), "runs": run_items, "timeline": events})
        return
    console.print(task_panel(task_json(task)))
    if run_items:
        console.print(run_table(run_items))
    if events:
        console.print(timeline_table(events))


@app.command()
def cancel(
    task_id: TaskId,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why; kept on the task's timeline.")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Cancel a task that is not closed yet (its running attempt, if any, loses its lease)."""
    hints: Hints = {
        NotFoundError: NOT_FOUND_HINT,
        ConflictError: f"Only an open task can be canceled: 'workloom tasks show {task_id}' shows its status.",
    }
    with connect(hints=hints) as client:
        task = client.cancel_task(task_id, reason)
    if json_output:
        print_json(task_json(task))
        return
    console.print(
        Text.assemble("Canceled ", (task.identifier or task.id, "bold"), f" ({reason})" if reason else ""),
        soft_wrap=True,
    )
