"""API tests run the real server as a process, on every database the suite has (see tests/conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess

from databases import run_sync
from workloom.engine.service import Workloom


@pytest.fixture
def start_server(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start one or more servers on the test's database; all are stopped at the end."""
    token = "wl_test_" + secrets.token_urlsafe(16)
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(database_url=database_url, token=token, log_dir=tmp_path, env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """An admin client of the bootstrap workspace ``default``."""
    with server.client() as client:
        yield client


@pytest.fixture
def make_key(server: ServerProcess) -> Callable[[str, str], str]:
    """``make_key(workspace, role)``: a new API key (its workspace created if new) on the server's database."""

    async def create(workspace: str, role: str) -> str:
        wl = Workloom.from_url(server.database_url)
        try:
            return (await wl.access.create_key(workspace, role)).secret
        finally:
            await wl.stop()

    def make(workspace: str, role: str) -> str:
        return run_sync(create(workspace, role))

    return make
