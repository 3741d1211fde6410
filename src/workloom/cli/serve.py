"""``workloom serve``: the HTTP server, with settings from options or the environment."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from workloom.cli.db import DEFAULT_DATABASE_URL, DatabaseUrl, check_url
from workloom.cli.output import fail

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def serve(
    host: Annotated[str, typer.Option(envvar="WORKLOOM_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="WORKLOOM_PORT", min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 8000,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    bootstrap_token: Annotated[
        str | None,
        typer.Option(
            envvar="WORKLOOM_BOOTSTRAP_TOKEN",
            show_envvar=True,
            help="Make sure this secret is an admin key of workspace 'default' (otherwise one is created "
            "and printed on the very first start).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            envvar="WORKLOOM_WORKERS",
            min=1,
            help="Server processes sharing the port (PostgreSQL only).",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(envvar="WORKLOOM_LOG_LEVEL", help="One of " + ", ".join(LOG_LEVELS))] = (
        "info"
    ),
) -> None:
    """Run the Workloom server: migrate the database, make sure an admin key exists, serve HTTP."""
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}.")
    check_url(database_url)
    try:
        from workloom.api.server import run_server
    except ModuleNotFoundError as exc:
        if exc.name not in ("workloom.api.server", "workloom.api"):
            raise
        fail("This installation has no HTTP server (workloom.api.server is missing).", hint="Reinstall workloom.")
    from workloom.api.processes import NeedsPostgres

    with contextlib.suppress(KeyboardInterrupt):  # the server shuts down gracefully on its own
        try:
            status = run_server(
                host=host,
                port=port,
                database_url=database_url,
                bootstrap_token=bootstrap_token or None,
                log_level=log_level.lower(),
                workers=workers,
            )
        except NeedsPostgres:
            fail(
                f"--workers {workers} needs PostgreSQL: SQLite has one writer at a time, which one process serves "
                "best.",
                hint="Run with --workers 1, or point --database-url at PostgreSQL.",
            )
        if status:
            raise typer.Exit(status)
