"""``workloom workspaces``: the tenants in a database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from workloom.cli.db import DEFAULT_DATABASE_URL, DatabaseUrl, with_database
from workloom.cli.output import console, local_time, note, print_json
from workloom.domain.models import Workspace

if TYPE_CHECKING:
    from workloom.engine.service import Workloom

app = typer.Typer(help="List workspaces.", no_args_is_help=True)


@app.command("list")
def list_workspaces(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the workspaces in the database (read directly; no server needed)."""

    async def op(wl: Workloom) -> list[Workspace]:
        return await wl.access.workspaces()

    spaces = with_database(database_url, op)
    if json_output:
        print_json([{"id": s.id, "name": s.name, "created_at": s.created_at.isoformat()} for s in spaces])
        return
    if not spaces:
        note("No workspaces yet: 'workloom keys create --workspace NAME --role admin' makes one.")
        return
    table = Table("name", "id", "created")
    for space in spaces:
        table.add_row(space.name, space.id, local_time(space.created_at.isoformat()))
    console.print(table)
