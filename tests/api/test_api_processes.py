"""``workloom serve --workers N``: N server processes on one port (PostgreSQL), under one supervisor that
prepares the database once, replaces a process that dies, stops them all on SIGTERM, and whose processes
stop by themselves if it is killed. ``/metrics`` counts for all of them whichever answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from serverproc import ServerProcess, free_port, poll

from workloom.api.processes import METRICS_PREFIX

PROCESSES = 2
on_postgres = pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def serving(server: ServerProcess) -> list[psutil.Process]:
    """The server processes the supervisor has running (not its helpers, not ended ones)."""
    assert server.process is not None
    found = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def all_serving(server: ServerProcess) -> list[psutil.Process]:
    """The server processes, once all ``PROCESSES`` are running."""

    def running() -> list[psutil.Process] | None:
        now = serving(server)
        return now if len(now) == PROCESSES else None

    found: list[psutil.Process] = poll(running, f"{PROCESSES} server processes")
    return found


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by whoever adopted it
    except psutil.NoSuchProcess:
        return True


def answered_by(server: ServerProcess, path: str = "/healthz", status: int = 200) -> str:
    """Which process answered a request made on a connection of its own: the prefix of the request id it
    gave (each process draws its own)."""
    with httpx.Client(base_url=server.url, timeout=10) as fresh:
        response = fresh.get(path)
    assert response.status_code == status
    return response.headers["x-request-id"][:16]


def not_found_counted(api: httpx.Client) -> float:
    """``workloom_http_requests_total`` for GET answered 404, as a scrape reads it (the scrapes themselves,
    answered 200, do not count here)."""
    pattern = re.compile(r'^workloom_http_requests_total\{method="GET",status="404"\} (\S+)$', re.MULTILINE)
    found = pattern.search(api.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


@on_postgres
def test_the_processes_share_the_port_and_their_counts(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(WORKLOOM_WORKERS=str(PROCESSES))
    all_serving(server)

    # Connections are handed to either process: both answer.
    seen: set[str] = set()
    with ThreadPoolExecutor(4) as pool:

        def every_process_answered() -> bool:
            seen.update(pool.map(lambda _: answered_by(server), range(8)))
            return len(seen) >= PROCESSES

        poll(every_process_answered, "requests answered by every process", timeout=30)

    # A scrape counts every process's requests, whichever process answers it.
    with server.client() as api:
        before = not_found_counted(api)
        made = 40
        with ThreadPoolExecutor(4) as pool:
            answering = set(pool.map(lambda _: answered_by(server, "/nowhere", 404), range(made)))
        assert len(answering) == PROCESSES  # (as likely as above: were it not so, this test would show nothing)
        poll(lambda: not_found_counted(api) - before == made, f"the {made} requests counted", timeout=10)


@on_postgres
def test_a_process_that_dies_is_replaced(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(WORKLOOM_WORKERS=str(PROCESSES))
    first = all_serving(server)
    victim = first[0].pid
    first[0].kill()

    def replaced() -> bool:
        now = serving(server)
        return len(now) == PROCESSES and victim not in {p.pid for p in now}

    poll(replaced, "the killed process replaced")
    with server.client() as api:
        assert api.get("/readyz").status_code == 200
        assert api.post("/v1/queues", json={"name": "after"}).status_code == 201
    assert server.process is not None and server.process.poll() is None
    assert "a server process ended; starting another" in server.log_path.read_text()


@on_postgres
def test_sigterm_stops_every_process_and_exits_0(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(WORKLOOM_WORKERS=str(PROCESSES))
    pids = [p.pid for p in all_serving(server)]

    assert server.terminate() == 0
    poll(lambda: all(ended(pid) for pid in pids), "every server process ended")


@on_postgres
def test_the_processes_stop_when_the_supervisor_is_killed(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(WORKLOOM_WORKERS=str(PROCESSES))
    pids = [p.pid for p in all_serving(server)]

    assert server.process is not None
    (directory,) = Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}{server.process.pid}-*")
    server.kill()
    poll(lambda: all(ended(pid) for pid in pids), "the orphaned server processes ended", timeout=40)

    # Its metrics directory outlives it (it could not remove it); the next supervisor on the machine does.
    all_serving(start_server(WORKLOOM_WORKERS=str(PROCESSES)))
    assert not directory.exists()


@on_postgres
def test_the_database_is_prepared_once(start_server: Callable[..., ServerProcess]) -> None:
    # No bootstrap token: the first start makes the admin key and prints it, once for all the processes.
    server = start_server(WORKLOOM_WORKERS=str(PROCESSES), WORKLOOM_BOOTSTRAP_TOKEN="")
    all_serving(server)

    printed = re.findall(r"bootstrap admin key \(workspace 'default', shown once\): (\S+)", server.log_path.read_text())
    assert len(printed) == 1
    with server.client(token=printed[0]) as api:
        assert api.get("/v1/queues").status_code == 200


def test_several_processes_need_postgres(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", "serve", "--workers", "2", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "--workers 2 needs PostgreSQL" in done.stderr
    assert not (tmp_path / "one.db").exists()  # refused before anything was created


@on_postgres
def test_processes_that_keep_failing_as_they_start_stop_the_server(database_url: str, tmp_path: Path) -> None:
    # Every server process (and nothing else: not the supervisor) exits as it starts.
    failing = 'import sys\nif "--multiprocessing-fork" in sys.argv:\n    sys.exit(3)\n'
    (tmp_path / "sitecustomize.py").write_text(failing)
    done = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", "serve", "--workers", "2", "--port", "0"],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "WORKLOOM_DATABASE_URL": database_url,
            "WORKLOOM_BOOTSTRAP_TOKEN": "wl_test_" + "x" * 22,
            "WORKLOOM_LOG_LEVEL": "warning",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    assert "server processes keep ending as they start" in done.stderr


def test_a_database_that_cannot_be_prepared_starts_no_process(tmp_path: Path) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nobody listens there
    done = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", "serve", "--workers", "2", "--database-url", nowhere],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert "the database could not be prepared; no server process was started" in done.stderr
