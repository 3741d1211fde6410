"""Test databases for every tier: SQLite files and PostgreSQL databases, empty or migrated.

PostgreSQL is found in this order:

1. ``WORKLOOM_TEST_POSTGRES_URL`` if set (``none`` turns PostgreSQL off), else the local default
   ``postgresql://postgres@127.0.0.1:5432/test``;
2. if that is unreachable and the ``initdb``/``pg_ctl`` binaries exist, a throwaway cluster in a temp
   directory on a free port, started for the session and stopped at its end;
3. otherwise none: PostgreSQL tests skip (or, with ``WORKLOOM_REQUIRE_POSTGRES=1``, the run stops).

Admin statements run on their own short-lived event loop, so they never touch the loop a test runs on.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa

from workloom.engine.service import Workloom

T = TypeVar("T")

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 3.0


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a private event loop (not installed as the thread's current loop)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:12]}"


async def migrate(url: str) -> None:
    wl = Workloom.from_url(url)
    try:
        await wl.migrate()
    finally:
        await wl.stop()


# -- PostgreSQL ----------------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A reachable server on which tests may create and drop databases."""

    admin_url: str  # a database to connect to for CREATE/DROP DATABASE
    cluster: ThrowawayCluster | None = None
    template: str | None = None
    # Dropping a database can take half a second; tests need not wait for it.
    _dropper: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "drop-database"))
    _drops: list[Future[None]] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return sa.engine.make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    async def _execute(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=CONNECT_TIMEOUT)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create(self, *, template: str | None = None) -> str:
        name = unique_name("wl_test")
        clause = f' TEMPLATE "{template}"' if template else ""
        run_sync(self._execute(f'CREATE DATABASE "{name}"{clause}'))
        return name

    def drop(self, name: str) -> None:
        run_sync(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_later(self, name: str) -> None:
        """Drop in the background; ``close`` waits for every drop and reports the first that failed."""
        self._drops.append(self._dropper.submit(self.drop, name))

    def migrated_template(self) -> str:
        """A migrated database to clone per test (``CREATE DATABASE … TEMPLATE``); made once per session."""
        if self.template is None:
            name = self.create()
            run_sync(migrate(self.url_for(name)))
            self.template = name
        return self.template

    def close(self) -> None:
        try:
            self._dropper.shutdown(wait=True)
            if self.template is not None:
                self.drop(self.template)
            for dropped in self._drops:
                dropped.result()
        finally:
            if self.cluster is not None:
                self.cluster.stop()


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


@dataclass
class ThrowawayCluster:
    """A private PostgreSQL cluster in a temp directory, run as the ``postgres`` user when we are root."""

    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="workloom-pg-")))
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = (
                ["runuser", "-u", "postgres", "--", *command]
                if shutil.which("runuser")
                else ["su", "postgres", "-c", subprocess.list2cmdline(command)]
            )
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
        self.port = _free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bindir() -> Path | None:
    for directory in [os.path.dirname(shutil.which("initdb") or ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"))]:
        if directory and all(os.access(os.path.join(directory, b), os.X_OK) for b in ("initdb", "pg_ctl")):
            return Path(directory)
    return None


# Why there is no PostgreSQL, as pytest-xdist's controller found (``conftest``), for its workers to report.
UNAVAILABLE_REASON = "WORKLOOM_TEST_POSTGRES_UNAVAILABLE"


def find_postgres() -> tuple[PostgresServer | None, str]:
    """A usable server, or None and the reason there is none."""
    configured = os.environ.get("WORKLOOM_TEST_POSTGRES_URL")
    if configured and configured.lower() == "none":
        return None, os.environ.get(UNAVAILABLE_REASON, "WORKLOOM_TEST_POSTGRES_URL=none")
    url = configured or DEFAULT_POSTGRES_URL
    if run_sync(_reachable(url)):
        return PostgresServer(url), f"using {url}"
    bindir = _postgres_bindir()
    if bindir is None:
        return None, f"{url} is unreachable and no initdb/pg_ctl was found to start a throwaway cluster"
    cluster = ThrowawayCluster(bindir)
    try:
        cluster.start()
    except (OSError, LookupError, subprocess.SubprocessError) as exc:  # LookupError: no postgres user
        detail = getattr(exc, "stderr", None) or exc
        cluster.stop()
        return None, f"{url} is unreachable and a throwaway cluster did not start: {detail}"
    reason = f"{url} unreachable; started a throwaway cluster at {cluster.url}"
    return PostgresServer(cluster.url, cluster=cluster), reason
