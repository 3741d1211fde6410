"""``workloom keys``: API keys, made and listed directly on the database (the first key needs no server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from workloom.cli.db import DEFAULT_DATABASE_URL, DatabaseUrl, with_database
from workloom.cli.output import console, fail, print_json, when
from workloom.domain.models import DEFAULT_WORKSPACE, ApiKey
from workloom.domain.roles import ROLES

if TYPE_CHECKING:
    from workloom.engine.access import IssuedKey
    from workloom.engine.service import Workloom

app = typer.Typer(help="Create and list API keys.", no_args_is_help=True)

Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace name (created if new).")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command()
def create(
    role: Annotated[str, typer.Option(help="admin, member or agent.")],
    workspace: Workspace = DEFAULT_WORKSPACE,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    json_output: JsonOutput = False,
) -> None:
    """Create a key. It is printed once, as the last word of the output; only its hash is stored."""
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}.")

    async def op(wl: Workloom) -> IssuedKey:
        return await wl.access.create_key(workspace, role, name=name)

    issued = with_database(database_url, op, migrate=True)
    if json_output:
        print_json({**key_json(issued.key, issued.workspace.name), "key": issued.secret})
        return
    typer.echo(
        f"Created {issued.key.role} key {issued.key.name!r} ({issued.key.id}) in workspace "
        f"{issued.workspace.name!r}. Store it now; it is not shown again:"
    )
    typer.echo(issued.secret)


@app.command("list")
def list_keys(
    workspace: Workspace = DEFAULT_WORKSPACE,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    json_output: JsonOutput = False,
) -> None:
    """List a workspace's keys (their prefixes only: the keys themselves are not stored)."""

    async def op(wl: Workloom) -> tuple[list[str], list[ApiKey] | None]:
        spaces = await wl.access.workspaces()
        match = next((space for space in spaces if space.name == workspace), None)
        return [space.name for space in spaces], (await wl.access.keys(match.id) if match else None)

    names, found = with_database(database_url, op)
    if found is None:
        fail(f"No workspace named {workspace!r}.", hint=f"Workspaces: {', '.join(names) or 'none yet'}.")
    if json_output:
        print_json([key_json(key, workspace) for key in found])
        return
    revoked = any(key.revoked_at for key in found)
    table = Table("name", "role", "prefix", "created", "id", title=f"Keys of {workspace}")
    if revoked:
        table.add_column("revoked")
    for key in found:
        row = [key.name, key.role, key.prefix + "…", when(key.created_at.isoformat()), key.id]
        if revoked:
            row.append(when(key.revoked_at.isoformat()) if key.revoked_at else "")
        table.add_row(*row)
    console.print(table)


def key_json(key: ApiKey, workspace: str) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "workspace": workspace,
        "workspace_id": key.workspace_id,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }
