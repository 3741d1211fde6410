"""Running the server: uvicorn with JSON logs and a graceful shutdown that also ends open streams."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from workloom.api import logs
from workloom.api.app import create_app
from workloom.api.wire import OneWriteHttp
from workloom.settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 30
# A young collection every 700 net allocations (Python's default) means a full one every ~70,000; a
# request allocates hundreds, and each full collection walks every open connection's objects (~200 each).
GC_YOUNG_THRESHOLD = 20_000
# On SQLite each statement runs on aiosqlite's thread, which needs the GIL to start it and to hand back what
# it found. Python gives a waiting thread the GIL after the switch interval (5 ms by default), so while the
# event loop ran Python (building a unit's next rows, rendering an answer) SQLite's work sent ahead of it
# (``fast.write_all_soon``) mostly waited instead of running beside it. At 1 ms it does run beside it.
SQLITE_SWITCH_INTERVAL = 0.001


class _Server(uvicorn.Server):
    """On SIGTERM/SIGINT, tell long-polls and SSE streams to finish so in-flight requests can drain."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What is loaded by now (modules, models, routes, statements: ~half a million objects) lives as long
        # as the process; out of the collector's sight, a full collection walks only what requests create.
        # With a thousand open streams, full collections took 200 ms of the event loop, now a few tens.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)


def run_server(
    host: str,
    port: int,
    database_url: str,
    bootstrap_token: str | None,
    log_level: str = "info",
    workers: int = 1,
) -> int:
    """Serve until stopped; the exit status. More than one worker: that many processes on the one port
    (``processes``), which needs PostgreSQL."""
    logs.configure(log_level)
    settings = Settings.from_env(database_url=database_url, bootstrap_token=bootstrap_token, log_level=log_level)
    if workers > 1:
        from workloom.api.processes import run_processes

        return run_processes(host, port, settings, workers)
    serve_app(create_app(settings), host=host, port=port)
    return 0


def serve_app(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, sockets: list[socket.socket] | None = None
) -> None:
    """Run ``app`` under uvicorn, on ``host``:``port`` or on ``sockets`` already listening, until stopped."""
    if app.state.settings.embedded:
        sys.setswitchinterval(SQLITE_SWITCH_INTERVAL)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=app.state.settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        proxy_headers=False,
        http=OneWriteHttp,  # each response in one write (``api.wire``)
    )
    # uvicorn shuts down gracefully and then re-raises the signal it caught into the previous handler;
    # with these, a requested stop ends the process with status 0 rather than "killed by SIGTERM".
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    _Server(config, app.state.stopping).run(sockets=sockets)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)
