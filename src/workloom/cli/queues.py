"""``workloom queues``: the queues of the key's workspace, through the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from workloom.cli.http import connect
from workloom.cli.output import console, note, number, print_json

app = typer.Typer(help="Queues of work (through the API).", no_args_is_help=True)


@app.command("list")
def list_queues(
    json_output: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")] = False,
) -> None:
    """List the queues of the workspace your API key belongs to."""
    with connect() as client:
        queues = [queue.model_dump(mode="json") for queue in client.list_queues()]
    if json_output:
        print_json(queues)
        return
    if not queues:
        note("No queues yet: 'workloom apply -f FILE' declares them, and creating a task with --queue NAME makes one.")
        return
    console.print(queue_table(queues))


def queue_table(queues: list[dict[str, Any]]) -> Table:
    table = Table("name", "start", "lease", "attempts", "retry backoff", "description")
    for queue in queues:
        table.add_row(
            str(queue.get("name", "")),
            str(queue.get("start_mode", "")),
            f"{number(queue.get('lease_seconds'))}s",
            str(queue.get("max_attempts", "")),
            backoff(queue),
            str(queue.get("description") or ""),
        )
    return table


def backoff(queue: dict[str, Any]) -> str:
    """First retry delay, growth factor and cap, e.g. ``1s x2 <=300s`` (drawn with the proper signs)."""
    first, factor, cap = (
        number(queue.get(key)) for key in ("initial_interval_seconds", "backoff_coefficient", "max_interval_seconds")
    )
    return f"{first}s ×{factor} ≤{cap}s"
