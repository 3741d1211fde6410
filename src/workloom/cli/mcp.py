"""``workloom mcp``: the MCP server that lets AI agents work Workloom queues (see docs/mcp.md)."""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from typing import Annotated, Literal

import typer

from workloom.cli.output import fail
from workloom.client import KEY_ENV, URL_ENV, Actor

Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LEVELS: dict[str, Level] = {
    "critical": "CRITICAL",
    "error": "ERROR",
    "warning": "WARNING",
    "info": "INFO",
    "debug": "DEBUG",
    "trace": "DEBUG",
}
LOG_LEVELS = tuple(LEVELS)


class McpTransport(StrEnum):
    stdio = "stdio"
    http = "http"


def mcp(
    transport: Annotated[
        McpTransport,
        typer.Option(
            help="stdio: an MCP client launches this command and talks over stdin/stdout. "
            "http: streamable HTTP at http://HOST:PORT/mcp, for clients that connect by URL."
        ),
    ] = McpTransport.stdio,
    host: Annotated[str, typer.Option(help="Address to listen on (http only).")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (http only; 0: any free port).")
    ] = 8765,
    worker: Annotated[
        str | None,
        typer.Option(
            envvar="WORKLOOM_WORKER",
            help="The name claims are made under (actor kind agent_session). Default: mcp@HOST:PID.",
        ),
    ] = None,
    max_claims: Annotated[int, typer.Option(min=1, max=1000, help="Most runs one MCP session may hold at once.")] = 10,
    log_level: Annotated[
        str, typer.Option(envvar="WORKLOOM_LOG_LEVEL", help="One of " + ", ".join(LOG_LEVELS) + " (to stderr).")
    ] = "warning",
) -> None:
    """Run an MCP server for AI agents: list queues, claim tasks, report progress, complete or fail them,
    and ask people questions. Talks to Workloom through the API with WORKLOOM_URL and WORKLOOM_API_KEY."""
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}.")
    if not os.environ.get(KEY_ENV):
        fail(
            f"{KEY_ENV} is not set: the MCP server acts with an API key.",
            hint=f"Create one with 'workloom keys create --role agent' and set {KEY_ENV} (and {URL_ENV} if the "
            "server is not at http://127.0.0.1:8000) in the MCP client's configuration for this server.",
        )
    from workloom.mcp import DeskConfig, run

    ref = worker or f"mcp@{socket.gethostname()}:{os.getpid()}"
    config = DeskConfig(worker=Actor(kind="agent_session", ref=ref), max_held=max_claims)
    mode: Literal["stdio", "http"] = "http" if transport is McpTransport.http else "stdio"
    run(config, mode, host=host, port=port, log_level=LEVELS[log_level.lower()])
