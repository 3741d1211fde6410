"""The commands that work on the database directly (migrate, keys, workspaces), run through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from databases import run_sync
from workloom.cli.main import app
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.store.migrate import head_revision

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


async def authenticate(url: str, secret: str) -> Principal:
    wl = Workloom.from_url(url)
    try:
        return await wl.access.authenticate(secret)
    finally:
        await wl.stop()


def test_migrate_brings_an_empty_database_to_the_newest_revision_and_can_repeat(database_url: str) -> None:
    code, output = invoke("migrate", "--database-url", database_url)
    assert code == 0, output
    assert f"revision {head_revision()}" in output

    code, output = invoke("migrate", "--database-url", database_url, "--json")
    assert code == 0, output
    assert json.loads(output)["revision"] == head_revision()


def test_migrate_reads_the_database_url_from_the_environment(database_url: str) -> None:
    code, output = invoke("migrate", env={"WORKLOOM_DATABASE_URL": database_url})
    assert code == 0, output
    assert head_revision() in output


def test_keys_create_prints_a_key_that_authenticates_as_the_last_word(database_url: str) -> None:
    code, output = invoke("keys", "create", "--workspace", "acme", "--role", "agent", "--database-url", database_url)
    assert code == 0, output
    secret = output.strip().splitlines()[-1].split()[-1]

    principal = run_sync(authenticate(database_url, secret))
    assert principal.role == "agent"
    assert principal.actor.kind == "agent_session"

    code, output = invoke("workspaces", "list", "--database-url", database_url, "--json")
    assert code == 0, output
    assert [space["name"] for space in json.loads(output)] == ["acme"]
    assert json.loads(output)[0]["id"] == principal.workspace_id


def test_keys_list_shows_prefixes_never_secrets(database_url: str) -> None:
    for role, name in (("admin", "ops"), ("member", "alice")):
        code, output = invoke(
            "keys", "create", "-w", "acme", "--role", role, "--name", name, "--database-url", database_url, "--json"
        )
        assert code == 0, output
    secret = json.loads(output)["key"]

    code, output = invoke("keys", "list", "--workspace", "acme", "--database-url", database_url, "--json")
    assert code == 0, output
    keys = json.loads(output)
    assert [(k["name"], k["role"]) for k in keys] == [("ops", "admin"), ("alice", "member")]
    assert secret not in output
    assert keys[1]["prefix"] == secret[: len(keys[1]["prefix"])]


def test_keys_list_of_an_unknown_workspace_names_the_ones_there_are(database_url: str) -> None:
    invoke("keys", "create", "-w", "acme", "--role", "admin", "--database-url", database_url)
    code, output = invoke("keys", "list", "-w", "nope", "--database-url", database_url)
    assert code == 1
    assert "No workspace named 'nope'" in output
    assert "acme" in output


def test_an_unknown_role_is_refused_before_touching_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    code, output = invoke("keys", "create", "--role", "boss", "--database-url", url)
    assert code == 1
    assert "admin, member, agent" in output
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("command", [("workspaces", "list"), ("keys", "list")])
def test_reads_of_a_missing_sqlite_file_say_to_migrate_and_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    code, output = invoke(*command, "--database-url", url)
    assert code == 1
    assert "workloom migrate" in output
    assert not (tmp_path / "missing.db").exists()


def test_reads_of_an_unmigrated_database_say_to_migrate(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        Path(database_url.removeprefix("sqlite:///")).touch()
    code, output = invoke("workspaces", "list", "--database-url", database_url)
    assert code == 1
    assert "not at the current schema" in output
    assert "workloom migrate" in output


def test_an_unsupported_database_url_is_explained() -> None:
    code, output = invoke("migrate", "--database-url", "mysql://localhost/db")
    assert code == 1
    assert "unsupported database 'mysql'" in output
