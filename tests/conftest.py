"""Database fixtures shared by every test tier.

``database_url`` is a fresh, empty database and ``migrated_url`` a fresh database at the newest schema,
each once on SQLite and once on PostgreSQL (test ids ``[sqlite]`` / ``[postgres]``). How PostgreSQL is
found, and what happens when it is not, is described in ``tests/databases.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from databases import UNAVAILABLE_REASON, PostgresServer, find_postgres, migrate, run_sync

REQUIRE_POSTGRES = os.environ.get("WORKLOOM_REQUIRE_POSTGRES") == "1"


@dataclass
class PostgresStatus:
    """What the session found; read by the terminal summary."""

    server: PostgresServer | None = None
    reason: str = ""
    looked: bool = False


status_key = pytest.StashKey[PostgresStatus]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs against PostgreSQL (the [postgres] half of a backend pair)")
    # Hypothesis imports libcst to report a failing example, which warns about mypy_extensions; without
    # this, filterwarnings=error turns a plain Hypothesis failure into an INTERNALERROR.
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
    config.stash[status_key] = PostgresStatus()
    if _hands_out_tests(config):
        _find_postgres_for_workers(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(status_key, None)
    if status is not None and status.server is not None:
        status.server.close()
        status.server = None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    status = config.stash.get(status_key, None)
    if status is None or not status.looked:
        return
    if status.server is None:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS DID NOT RUN: ONLY SQLITE WAS TESTED", red=True, bold=True)
        terminalreporter.write_line(f"reason: {status.reason}", red=True, bold=True)
        terminalreporter.write_line(
            "set WORKLOOM_TEST_POSTGRES_URL, or WORKLOOM_REQUIRE_POSTGRES=1 to make this an error", red=True
        )
    else:
        terminalreporter.write_line(f"postgresql: {status.reason}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Look for PostgreSQL once, before any test runs, if a selected test needs it."""
    if not any(item.get_closest_marker("postgres") for item in session.items):
        return
    status = _look_for_postgres(session.config)
    if status.server is None:
        message = f"PostgreSQL unavailable: {status.reason}"
        if REQUIRE_POSTGRES:
            pytest.exit(f"WORKLOOM_REQUIRE_POSTGRES=1 but {message}", returncode=3)
        for item in session.items:
            if item.get_closest_marker("postgres"):
                item.add_marker(pytest.mark.skip(reason=message))


def _hands_out_tests(config: pytest.Config) -> bool:
    """Whether this process is pytest-xdist's controller, handing the tests out to worker processes."""
    return config.getoption("dist", "no") != "no" and not hasattr(config, "workerinput")


def _find_postgres_for_workers(config: pytest.Config) -> None:
    """Under pytest-xdist the controller looks for PostgreSQL once, before the workers start, and tells them
    what it found through the environment they inherit: a throwaway cluster is started once (and stopped by
    the controller), a missing server fails the run here rather than in each worker, and the summary that
    says so loudly is the controller's."""
    status = _look_for_postgres(config)
    if status.server is None:
        if REQUIRE_POSTGRES:
            pytest.exit(f"WORKLOOM_REQUIRE_POSTGRES=1 but PostgreSQL unavailable: {status.reason}", returncode=3)
        os.environ["WORKLOOM_TEST_POSTGRES_URL"] = "none"
        os.environ[UNAVAILABLE_REASON] = status.reason
    else:
        os.environ["WORKLOOM_TEST_POSTGRES_URL"] = status.server.admin_url


def _look_for_postgres(config: pytest.Config) -> PostgresStatus:
    status = config.stash[status_key]
    if not status.looked:
        status.looked = True
        status.server, status.reason = find_postgres()
    return status


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> PostgresServer:
    """The PostgreSQL server for this session; tests that need it are skipped when there is none."""
    status = _look_for_postgres(pytestconfig)
    if status.server is None:
        pytest.skip(f"PostgreSQL unavailable: {status.reason}")
    return status.server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test that wants a migrated database."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_sync(migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    backend_name: str = request.param
    return backend_name


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty database (not migrated)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create()
    try:
        yield server.url_for(name)
    finally:
        server.drop_later(name)


@pytest.fixture
def migrated_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh database at the newest schema (a copy of a template migrated once per session)."""
    if backend == "sqlite":
        path = tmp_path / "migrated.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create(template=server.migrated_template())
    try:
        yield server.url_for(name)
    finally:
        server.drop_later(name)
