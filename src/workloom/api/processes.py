"""Several server processes on one port: ``workloom serve --workers N`` (PostgreSQL).

Every server process is stateless and everything they share is in PostgreSQL (claims take rows with
``SKIP LOCKED``, wake-ups cross processes by ``LISTEN/NOTIFY``, every process ticks), so N processes on one
machine are N servers on one database that happen to share a listening socket. This process, the
supervisor, does what must happen once and watches the rest:

- It prepares the database once, before any server process starts: migrations, and the bootstrap admin
  key (printed once, here). The server processes skip both.
- It binds and listens on the socket, then starts the processes, which all accept from it (the kernel
  hands each connection to one of them). A connection made while a process is starting or being
  replaced waits in the socket's backlog rather than being refused.
- A process that ends while the server is not stopping is replaced. Processes that keep ending right
  after they start (``MOST_QUICK_ENDS`` in a row, each within ``QUICK_END_SECONDS``: a bad setting, a
  database that refuses them) stop the whole server with status 1 instead of being restarted forever.
- SIGTERM or SIGINT here is passed on as SIGTERM: each process finishes its requests and ends its streams
  as a lone server does, within the same grace; then the supervisor exits with status 0.
- Each process holds the read end of a pipe whose other end only the supervisor holds: if the supervisor
  dies without stopping them (``kill -9``), the pipe ends and they stop themselves.
- Counters and histograms are kept per process in files that prometheus_client adds up at scrape time
  (its multiprocess mode, in a directory made here and removed at exit, or at the next start of a
  supervisor on the machine if this one was killed), so ``/metrics`` answers for the whole server whichever
  process serves the scrape (see ``engine.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from workloom.api import logs
from workloom.engine.metrics import SHARED_DIRECTORY
from workloom.settings import Settings

log = logging.getLogger("workloom.server")

# A process that ends sooner than this after it was started did not get going: counted towards giving up.
QUICK_END_SECONDS = 10.0
MOST_QUICK_ENDS = 3
# Beyond the server processes' own grace (they finish in-flight requests first), how long the supervisor
# waits for them to exit before it kills them.
EXIT_MARGIN_SECONDS = 5.0
# The metrics directory's name: this, the supervisor's pid, a dash and a random part.
METRICS_PREFIX = "workloom-metrics-"
# Spawned, not forked: a process starts from a clean interpreter rather than a copy of this one's state.
_SPAWN = multiprocessing.get_context("spawn")


class NeedsPostgres(ValueError):
    """Several server processes asked of the embedded database, whose one writer one process serves best."""


@dataclass
class _Child:
    process: BaseProcess
    lifeline: Connection  # the supervisor's end of the pipe: while it is open, the process keeps serving
    started: float


def run_processes(host: str, port: int, settings: Settings, workers: int) -> int:
    """Serve with ``workers`` processes until told to stop; the exit status (0 when stopped by a signal).
    ``NeedsPostgres`` on SQLite, before anything is done."""
    from workloom.api.server import GRACEFUL_SHUTDOWN_SECONDS

    if settings.embedded:
        raise NeedsPostgres(f"{workers} server processes need PostgreSQL: SQLite has one writer at a time")
    try:
        asyncio.run(_prepare(settings))
    except Exception:  # whatever stops the database being prepared stops the server, said once, not traced
        log.exception("the database could not be prepared; no server process was started")
        return 1
    listening = _listen(host, port)
    _sweep_metrics_directories()
    metrics_directory = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    os.environ[SHARED_DIRECTORY] = metrics_directory  # read by prometheus_client as each process imports it
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, stop)
    bound_host, bound_port = listening.getsockname()[:2]
    log.info("listening", extra={"address": f"http://{_url_host(bound_host)}:{bound_port}", "processes": workers})
    children = [_start(settings, listening) for _ in range(workers)]
    status = 0
    quick_ends = 0
    try:
        while not stopping.is_set():
            ended = wait([child.process.sentinel for child in children], timeout=0.5)
            for slot, child in enumerate(children):
                if child.process.sentinel not in ended:
                    continue
                _forget(child, metrics_directory)
                if stopping.is_set():
                    break
                quick = time.monotonic() - child.started < QUICK_END_SECONDS
                quick_ends = quick_ends + 1 if quick else 0
                if quick_ends >= MOST_QUICK_ENDS:
                    log.error(
                        "server processes keep ending as they start; stopping (see their errors above)",
                        extra={"pid": child.process.pid, "exit_code": child.process.exitcode},
                    )
                    status = 1
                    stopping.set()
                    break
                log.warning(
                    "a server process ended; starting another",
                    extra={"pid": child.process.pid, "exit_code": child.process.exitcode},
                )
                children[slot] = _start(settings, listening)
    finally:
        _stop_all(children, GRACEFUL_SHUTDOWN_SECONDS + EXIT_MARGIN_SECONDS)
        listening.close()
        shutil.rmtree(metrics_directory, ignore_errors=True)
        os.environ.pop(SHARED_DIRECTORY, None)
    return status


def _sweep_metrics_directories() -> None:
    """Remove the metrics directories of supervisors that were killed before they could (``kill -9``)."""
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        owner = path.name[len(METRICS_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to judge
    return True


async def _prepare(settings: Settings) -> None:
    """The database migrated and the bootstrap key made sure of, once for all the processes."""
    from workloom.api.app import prepare
    from workloom.engine.service import Workloom

    wl = Workloom.from_url(settings.database_url, pool_size=2)
    try:
        await prepare(wl, settings)
    finally:
        await wl.stop()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # asyncio's default backlog, which each process's server sets again
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _start(settings: Settings, listening: socket.socket) -> _Child:
    theirs, ours = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(target=serve_one, args=(settings, listening, theirs), name="workloom-server", daemon=False)
    process.start()
    theirs.close()  # the process has its own copy: the pipe ends when the supervisor's end closes
    return _Child(process, ours, time.monotonic())


def _forget(child: _Child, metrics_directory: str) -> None:
    """A process that has ended: reaped, its pipe closed, its live gauges no longer counted."""
    from prometheus_client import multiprocess

    child.process.join()
    child.lifeline.close()
    if child.process.pid is not None:
        multiprocess.mark_process_dead(child.process.pid, metrics_directory)  # type: ignore[no-untyped-call]


def _stop_all(children: list[_Child], patience: float) -> None:
    for child in children:
        if child.process.is_alive() and child.process.pid is not None:
            os.kill(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    for child in children:
        child.process.join(max(0.0, deadline - time.monotonic()))
        if child.process.is_alive():
            log.warning("a server process did not stop in time; killing it", extra={"pid": child.process.pid})
            child.process.kill()
            child.process.join()
        child.lifeline.close()


def serve_one(settings: Settings, listening: socket.socket, lifeline: Connection) -> None:
    """One server process (the target the supervisor spawns): serves ``listening`` until stopped."""
    from workloom.api.app import create_app
    from workloom.api.server import serve_app

    logs.configure(settings.log_level)
    _stop_when_ended(lifeline)
    serve_app(create_app(settings, prepared=True), sockets=[listening])


def _stop_when_ended(lifeline: Connection) -> None:
    """Stop this process, as SIGTERM does, once the supervisor's end of ``lifeline`` has closed."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv()  # the supervisor never sends: this returns only when its end is gone
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="workloom-lifeline", daemon=True).start()
