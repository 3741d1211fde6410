"""The MCP server itself: Workloom's tools on the ``mcp`` package's ``MCPServer``, served over stdio or
streamable HTTP."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Literal

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

from workloom import __version__
from workloom.mcp.desk import RELEASE_TIMEOUT_SECONDS, Desk, DeskConfig
from workloom.mcp.tools import register

log = logging.getLogger("workloom.mcp")

Transport = Literal["stdio", "http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
HTTP_PATH = "/mcp"
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACEFUL_SHUTDOWN_SECONDS = 10
HTTP_IDLE_RELEASE_SECONDS = 3600.0  # at least ask_human's longest wait

INSTRUCTIONS = """\
Workloom hands out work to people, AI agents and automations through queues. With these tools you act as a
worker with this server's API key:

1. list_queues shows the queues and how many tasks wait in each.
2. claim_next_task(queue) gives you the next task and a run_id. The claim is yours alone and is kept alive
   for you while this session lasts.
3. Do the work. get_task re-reads a task and its history; report_progress tells people how it goes.
4. End every claim with exactly one of complete_task (with your result), fail_task or release_task.

When you need a person's decision or information, ask_human creates a question for people and waits for
the answer; if it takes longer, check_human_answer picks it up later. Questions go to a queue for people
(human-input unless you name another): do not claim tasks from it yourself. Runs still held when the
session ends are given back to their queues.
"""


def build_server(desk: Desk, *, log_level: LogLevel = "WARNING") -> MCPServer[Desk]:
    """An ``MCPServer`` with Workloom's tools; ``desk`` is opened for the server's life (its lifespan)."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Desk]) -> AsyncIterator[Desk]:
        async with desk.open():
            yield desk

    server: MCPServer[Desk] = MCPServer(
        "workloom",
        title="Workloom",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=log_level,
    )
    register(server, desk)
    return server


async def serve_stdio(server: MCPServer[Desk], desk: Desk) -> None:
    """Serve one session on stdin/stdout until the client closes stdin or a signal asks to stop."""
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope, desk)
        await server.run_stdio_async()
        group.cancel_scope.cancel()


async def _stop_on_signal(scope: anyio.CancelScope, desk: Desk) -> None:
    with anyio.open_signal_receiver(*SIGNALS) as signals:
        async for signum in signals:
            log.info("received signal %s: releasing held runs and stopping", signum)
            break
    scope.cancel()
    # The stdio transport reads stdin on a worker thread that a cancellation cannot interrupt; once the
    # desk has released its runs there is nothing left to save, so do not wait for a line that may never come.
    if desk.closed is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_SECONDS + 5):
            await desk.closed.wait()
    os._exit(0)


async def serve_http(server: MCPServer[Desk], host: str, port: int, log_level: LogLevel = "WARNING") -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` (port 0: any free port); each MCP session holds its
    own runs. Once listening it prints ``Workloom MCP server listening at <url>`` on stderr."""
    if not _is_loopback(host):
        log.warning(
            "serving MCP on %s: anyone who can reach it acts with this server's Workloom API key; "
            "keep it on a private network",
            host,
        )
    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    sock = config.bind_socket()
    sock.listen()  # connections wait in the backlog until the server has started, so the URL is usable now
    bound = sock.getsockname()[1]
    where = f"[{host}]" if ":" in host else host
    print(f"Workloom MCP server listening at http://{where}:{bound}{HTTP_PATH}", file=sys.stderr, flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def run(
    config: DeskConfig,
    transport: Transport = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: LogLevel = "WARNING",
) -> None:
    """Run the MCP server until it is stopped (the ``workloom mcp`` command)."""
    if transport == "http" and config.idle_release_seconds is None:
        config = dataclasses.replace(config, idle_release_seconds=HTTP_IDLE_RELEASE_SECONDS)
    desk = Desk(config)
    server = build_server(desk, log_level=log_level)
    if transport == "stdio":
        anyio.run(serve_stdio, server, desk)
        return
    # uvicorn shuts down gracefully (the desk releases its runs) and then re-raises the signal it caught
    # into the previous handler; with these, a requested stop ends the process with status 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    anyio.run(serve_http, server, host, port, log_level)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
