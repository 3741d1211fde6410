"""The AGH conformance suite talks to the real server as a process, like tests/api, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "api"))

from agh_check import AGH
from serverproc import ServerProcess

from databases import run_sync
from workloom.engine.service import Workloom

KEEPALIVE = "0.5"  # the task stream sends a keep-alive this often, so a quiet stream is seen quickly


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    started = ServerProcess(
        database_url=database_url,
        token="wl_test_" + secrets.token_urlsafe(16),
        log_dir=tmp_path,
        env={"WORKLOOM_SSE_KEEPALIVE_SECONDS": KEEPALIVE},
    )
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def make_key(server: ServerProcess) -> Callable[[str, str], str]:
    """``make_key(workspace, role)``: a new API key on the server's database (its workspace made if new)."""

    async def create(workspace: str, role: str) -> str:
        wl = Workloom.from_url(server.database_url)
        try:
            return (await wl.access.create_key(workspace, role)).secret
        finally:
            await wl.stop()

    return lambda workspace, role: run_sync(create(workspace, role))


@pytest.fixture
def native(server: ServerProcess) -> Iterator[httpx.Client]:
    """The native /v1 API as the bootstrap admin of workspace ``default``."""
    with server.client(timeout=15) as client:
        yield client


@pytest.fixture
def operator(server: ServerProcess) -> Iterator[AGH]:
    """An AGH client with the bootstrap admin key (a person: actor kind ``human``)."""
    with server.client(timeout=15) as client:
        yield AGH(client)


@pytest.fixture
def agent_client(server: ServerProcess, make_key: Callable[[str, str], str]) -> Iterator[Callable[[], AGH]]:
    """``agent_client()``: an AGH client with a new agent key of ``default`` (actor kind ``agent_session``)."""
    clients: list[httpx.Client] = []

    def make() -> AGH:
        client = server.client(make_key("default", "agent"), timeout=15)
        clients.append(client)
        return AGH(client)

    yield make
    for client in clients:
        client.close()
