"""The ``workloom`` commands that go through the API, end to end against the real server process.

Most run in-process through Typer's runner (with ``WORKLOOM_URL`` / ``WORKLOOM_API_KEY`` in the
environment, as a person would set them); ``tail`` and the server-down case run as real subprocesses.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from serverproc import ServerProcess, free_port
from typer.testing import CliRunner

from workloom.cli.main import app
from workloom.client import Client

runner = CliRunner()


@dataclass
class Cli:
    """``workloom`` run in-process with the environment of someone using ``server``."""

    env: dict[str, str]

    def __call__(self, *args: str) -> Result:
        result = runner.invoke(app, list(args), env=self.env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str) -> str:
        result = self(*args)
        assert result.exit_code == 1, result.output
        return result.stderr


@pytest.fixture
def cli(server: ServerProcess) -> Cli:
    return Cli({"WORKLOOM_URL": server.url, "WORKLOOM_API_KEY": server.token})


@pytest.fixture
def wl(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, server.token) as client:
        yield client


# -- apply ------------------------------------------------------------------------------------------------


def test_apply_creates_then_updates_then_leaves_alone(cli: Cli, wl: Client, tmp_path: Path) -> None:
    spec = tmp_path / "queues.yaml"
    spec.write_text(
        "kind: queue\nname: support\nlease_seconds: 120\ndescription: customer tickets\n"
        "---\nqueues:\n  - name: billing\n    start_mode: manual\n    max_attempts: 5\n"
    )

    planned = cli.json("apply", "-f", str(spec), "--dry-run")
    assert planned["dry_run"] is True
    assert [(r["name"], r["action"]) for r in planned["results"]] == [("support", "created"), ("billing", "created")]
    assert wl.list_queues() == []  # a dry run changes nothing

    out = cli.ok("apply", "-f", str(spec))
    assert "support" in out and "created" in out
    assert wl.get_queue("support").lease_seconds == 120
    billing = wl.get_queue("billing")
    assert (billing.start_mode, billing.max_attempts) == ("manual", 5)

    spec.write_text(spec.read_text().replace("lease_seconds: 120", "lease_seconds: 90"))
    result = cli.json("apply", "-f", str(spec))
    assert [(r["name"], r["action"]) for r in result["results"]] == [("support", "updated"), ("billing", "unchanged")]
    assert result["results"][0]["changes"] == {"lease_seconds": {"from": 120, "to": 90}}
    support = wl.get_queue("support")
    assert (support.lease_seconds, support.description) == (90, "customer tickets")

    again = cli.json("apply", "-f", str(spec))
    assert {r["action"] for r in again["results"]} == {"unchanged"}

    as_json = tmp_path / "queues.json"
    as_json.write_text(json.dumps({"queues": [{"name": "support", "lease_seconds": 60}]}))
    assert cli.json("apply", "-f", str(as_json))["results"][0]["action"] == "updated"
    assert [q["name"] for q in cli.json("queues", "list")] == ["billing", "support"]


def test_apply_refuses_what_it_cannot_apply_before_changing_anything(cli: Cli, wl: Client, tmp_path: Path) -> None:
    spec = tmp_path / "mixed.yaml"
    spec.write_text("kind: queue\nname: support\n---\nkind: workflow\nname: onboarding\n")
    err = cli.fails("apply", "-f", str(spec))
    assert "document 2" in err and "workflows cannot be applied yet" in err
    assert wl.list_queues() == []

    spec.write_text("kind: queue\nname: support\nlease_seconds: 0\n")  # the server's range check
    err = cli.fails("apply", "-f", str(spec))
    assert "Could not create" in err and "lease_seconds" in err


# -- tasks and runs ---------------------------------------------------------------------------------------


def test_tasks_create_list_show_and_cancel(cli: Cli) -> None:
    created = cli.json(
        "tasks", "create", "Answer ticket 1", "--queue", "support", "--priority", "high",
        "--owner", "human:alice", "--data", '{"ticket": 1}',
    )  # fmt: skip
    assert (created["title"], created["queue"], created["priority"], created["status"]) == (
        "Answer ticket 1", "support", "high", "ready",
    )  # fmt: skip
    assert created["owner"] == {"kind": "human", "ref": "alice"}
    assert "Created WL-" in cli.ok("tasks", "create", "Pay invoice", "-q", "billing")
    for n in range(3):
        cli.ok("tasks", "create", f"Low {n}", "-q", "support", "-p", "low")

    listed = cli.json("tasks", "list")
    assert len(listed["items"]) == 5 and listed["next_cursor"] is None
    assert "Answer ticket 1" in cli.ok("tasks", "list")

    assert [t["title"] for t in cli.json("tasks", "list", "--priority", "high")["items"]] == ["Answer ticket 1"]
    assert [t["title"] for t in cli.json("tasks", "list", "--owner", "human:alice")["items"]] == ["Answer ticket 1"]
    assert [t["title"] for t in cli.json("tasks", "list", "--owner", "alice")["items"]] == ["Answer ticket 1"]
    assert len(cli.json("tasks", "list", "--queue", "support,billing", "--priority", "low,high")["items"]) == 4
    by_title = cli.json("tasks", "list", "--sort", "title", "--queue", "support")["items"]
    assert [t["title"] for t in by_title] == ["Answer ticket 1", "Low 0", "Low 1", "Low 2"]

    page = cli.json("tasks", "list", "--limit", "2")
    assert len(page["items"]) == 2 and page["next_cursor"]
    everything = cli.json("tasks", "list", "--limit", "2", "--all")
    assert len(everything["items"]) == 5 and everything["next_cursor"] is None
    assert "--cursor" in cli("tasks", "list", "--limit", "2").stderr

    shown = cli.json("tasks", "show", created["identifier"])
    assert shown["task"]["id"] == created["id"]
    assert [e["type"] for e in shown["timeline"]][:2] == ["task.created", "task.ready"]
    assert "Answer ticket 1" in cli.ok("tasks", "show", created["id"])

    canceled = cli.json("tasks", "cancel", created["identifier"], "--reason", "duplicate")
    assert canceled["status"] == "canceled"
    events = cli.json("tasks", "show", created["identifier"])["timeline"]
    assert any(e["type"] == "task.canceled" and e["payload"].get("reason") == "duplicate" for e in events)
    err = cli.fails("tasks", "cancel", created["identifier"])
    assert "409" in err and f"workloom tasks show {created['identifier']}" in err

    err = cli.fails("tasks", "show", "WL-999")
    assert "not found" in err.lower() and "workloom tasks list" in err


def test_a_bad_priority_is_reported_naming_the_field(cli: Cli) -> None:
    err = cli.fails("tasks", "create", "Urgent-ish", "--priority", "asap")
    assert "HTTP 422" in err
    assert "priority:" in err  # the field, with what is allowed
    assert "urgent" in err
    assert "Traceback" not in err
    assert cli.json("tasks", "list")["items"] == []


def test_runs_list_and_show(cli: Cli, wl: Client) -> None:
    task = wl.create_task("Draft a reply", queue="support", max_attempts=2)
    assert cli.json("runs", "list", "--task", task.identifier or task.id)["items"][0]["status"] == "queued"
    claim = wl.claim("support")[0]
    wl.heartbeat(claim.run.id, claim.claim_token, progress={"step": "drafting"}, usage={"tokens": 42})
    wl.fail_run(claim.run.id, claim.claim_token, "model timed out")

    runs = cli.json("runs", "list", "--task", task.identifier or task.id)["items"]
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "queued")]
    assert "failed" in cli.ok("runs", "list", "--task", task.id)

    run = cli.json("runs", "show", claim.run.id)
    assert (run["id"], run["status"], run["error"]) == (claim.run.id, "failed", "model timed out")
    assert run["usage"] == {"tokens": 42} and run["progress"] == {"step": "drafting"}
    text = cli.ok("runs", "show", claim.run.id)
    assert "model timed out" in text and task.identifier in text

    assert "runs list --task" in cli.fails("runs", "show", "run_nope")
    assert "tasks list" in cli.fails("runs", "list", "--task", "WL-404")


# -- import and export ------------------------------------------------------------------------------------


def test_import_csv_and_jsonl_are_idempotent_and_export_round_trips(cli: Cli, wl: Client, tmp_path: Path) -> None:
    tickets = tmp_path / "tickets.csv"
    with tickets.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "customer", "level"])
        for n in range(30):
            writer.writerow([f"Ticket {n}", f"customer-{n}", "high" if n % 3 == 0 else "low"])
        writer.writerow(["Broken", "someone", "asap"])  # a priority the server refuses

    args = ("import", str(tickets), "--queue", "inbox", "--title-field", "subject", "--priority-field", "level")
    first = cli(*args, "--json", "--concurrency", "4")
    assert first.exit_code == 1, first.output  # one row failed
    summary = json.loads(first.stdout)
    assert (summary["rows"], summary["created"], summary["existing"]) == (31, 30, 0)
    assert [f["line"] for f in summary["failed"]] == [32]
    assert "priority" in summary["failed"][0]["error"]
    assert "retries only these rows" in first.stderr

    again = json.loads(cli(*args, "--json").stdout)
    assert (again["created"], again["existing"], len(again["failed"])) == (0, 30, 1)
    inbox = list(wl.iter_tasks(queue="inbox"))
    assert len(inbox) == 30
    assert sorted(t.title for t in inbox) == sorted(f"Ticket {n}" for n in range(30))
    ticket_3 = next(t for t in inbox if t.title == "Ticket 3")
    assert ticket_3.priority == "high"
    assert ticket_3.data == {"subject": "Ticket 3", "customer": "customer-3", "level": "high"}
    assert ticket_3.metadata["import"]["line"] == 5

    lines = tmp_path / "more.jsonl"
    lines.write_text("\n".join(json.dumps({"title": f"Line {n}", "n": n}) for n in range(12)) + "\n\n")
    text = cli.ok("import", str(lines), "--queue", "inbox")
    assert "12 created" in text
    assert "0 created" in cli.ok("import", str(lines), "--queue", "inbox")
    assert "12 created" in cli.ok("import", str(lines), "--queue", "elsewhere")  # another queue: another import
    assert len(list(wl.iter_tasks(queue="inbox"))) == 42

    # export: every task of the queue, with its output
    claim = wl.claim("inbox")[0]
    wl.complete_run(claim.run.id, claim.claim_token, result={"reply": "done"})
    exported = tmp_path / "inbox.jsonl"
    cli.ok("export", "--queue", "inbox", "-o", str(exported))
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(records) == 42
    assert {r["id"] for r in records} == {t.id for t in wl.iter_tasks(queue="inbox")}
    assert next(r for r in records if r["id"] == claim.task.id)["output"] == {"reply": "done"}
    done = [json.loads(line) for line in cli.ok("export", "--queue", "inbox", "--status", "completed").splitlines()]
    assert [r["id"] for r in done] == [claim.task.id]

    as_csv = tmp_path / "inbox.csv"
    cli.ok("export", "--queue", "inbox", "-o", str(as_csv))
    with as_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 42
    assert json.loads(next(r for r in rows if r["title"] == "Ticket 3")["data"])["customer"] == "customer-3"

    # an export reads back in: the same titles, priorities and data in another queue
    reimport = ("import", str(exported), "--queue", "copy", "--data-field", "data", "--priority-field", "priority")
    copied = cli.json(*reimport)
    assert copied["created"] == 42
    copies = {t.title: t for t in wl.iter_tasks(queue="copy")}
    originals = {t.title: t for t in wl.iter_tasks(queue="inbox")}
    assert copies.keys() == originals.keys()
    assert all((copies[k].data, copies[k].priority) == (originals[k].data, originals[k].priority) for k in copies)


def test_import_refuses_a_file_it_cannot_read_before_sending_anything(cli: Cli, wl: Client, tmp_path: Path) -> None:
    assert "No file at" in cli.fails("import", str(tmp_path / "absent.csv"), "--queue", "inbox")
    no_title = tmp_path / "people.csv"
    no_title.write_text("name,email\nAda,ada@example.com\n")
    err = cli.fails("import", str(no_title), "--queue", "inbox")
    assert "no column 'title'" in err and "--title-field" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert "--format" in cli.fails("import", str(notes), "--queue", "inbox")
    assert wl.list_queues() == []


# -- tail and reachability --------------------------------------------------------------------------------


def _env(url: str, key: str) -> dict[str, str]:
    return {**os.environ, "WORKLOOM_URL": url, "WORKLOOM_API_KEY": key, "COLUMNS": "200"}


def test_tail_follows_events_of_one_queue_as_json(server: ServerProcess, wl: Client) -> None:
    first = wl.create_task("Before tail", queue="support")
    wl.create_task("Other queue", queue="billing")
    process = subprocess.Popen(
        [sys.executable, "-m", "workloom.cli.main", "tail", "--json", "--queue", "support", "--after", "0",
         "--types", "task.created,task.canceled"],
        env=_env(server.url, server.token), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout or []:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        second = wl.create_task("During tail", queue="support")
        wl.create_task("Other again", queue="billing")
        wl.cancel_task(first.id, "stale")
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            try:
                seen.append(json.loads(lines.get(timeout=1)))
            except queue.Empty:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert [(e["type"], e["task_id"]) for e in seen] == [
            ("task.created", first.id),
            ("task.created", second.id),
            ("task.canceled", first.id),
        ]
        assert [e["sequence"] for e in seen] == sorted(e["sequence"] for e in seen)
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("command", [["tasks", "list"], ["tail"], ["apply", "-f", "-"], ["runs", "show", "run_x"]])
def test_a_server_that_is_down_is_reported_with_how_to_start_it(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "workloom.cli.main", *command],
        env=_env(url, "wl_some_key"),
        input="kind: queue\nname: q\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"isn't reachable at {url}" in result.stderr
    assert "workloom serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_key_says_how_to_get_one(server: ServerProcess) -> None:
    result = runner.invoke(app, ["tasks", "list"], env={"WORKLOOM_URL": server.url, "WORKLOOM_API_KEY": "wl_wrong"})
    assert result.exit_code == 1
    assert "401" in result.stderr and "workloom keys create" in result.stderr
