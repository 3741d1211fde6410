"""``workloom migrate``: bring a database to the newest schema without starting a server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from workloom.cli.db import DEFAULT_DATABASE_URL, DatabaseUrl, current_revision, display_url, with_database
from workloom.cli.output import console, print_json


def migrate(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create or upgrade the database schema (safe to run while servers are up, and to repeat)."""
    revision = with_database(database_url, current_revision, migrate=True)
    if json_output:
        print_json({"database": display_url(database_url), "revision": revision})
    else:
        console.print(
            Text.assemble("Database ", display_url(database_url), " is at revision ", (str(revision), "bold"), ".")
        )
