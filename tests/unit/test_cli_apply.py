"""``workloom apply``: reading declarations from YAML and JSON, and what applying them would change."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloom.cli.apply import ApplyError, Declared, declarations, queue_change
from workloom.client import Queue


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_documents_and_plural_groups_declare_queues_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "q.yaml",
        "kind: queue\nname: support\nlease_seconds: 120\n---\n"
        "queues:\n  - name: billing\n    start_mode: manual\n  - name: ops\n    settings: {max_attempts: 5}\n"
        "---\n- {kind: queue, name: bulk, backoff_coefficient: 1.5, description: null}\n",
    )
    found = declarations(path)
    assert [(d.kind, d.name, d.fields) for d in found] == [
        ("queue", "support", {"lease_seconds": 120}),
        ("queue", "billing", {"start_mode": "manual"}),
        ("queue", "ops", {"max_attempts": 5}),
        ("queue", "bulk", {"backoff_coefficient": 1.5}),
    ]
    assert "document 2" in found[1].where
    assert "queues[0]" in found[1].where


def test_json_files_are_read_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, "q.json", '{"queues": [{"name": "support", "initial_interval_seconds": 0}]}')
    assert [(d.name, d.fields) for d in declarations(path)] == [("support", {"initial_interval_seconds": 0})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: workflow\nname: onboarding\n", "workflows cannot be applied yet"),
        ("workflows: [{name: onboarding}]\n", "workflows cannot be applied yet"),
        ("kind: pipeline\nname: x\n", "unknown kind 'pipeline'; kinds that can be applied: queue"),
        ("kind: queue\nname: x\nlease: 3\n", "unknown field 'lease'"),
        (
            "kind: queue\nname: x\nlease_seconds: '3'\n",
            'lease_seconds must be a whole number of seconds (1 to 86400), not "3"',
        ),
        ("kind: queue\nname: x\nmax_attempts: true\n", "max_attempts must be a whole number"),
        ("kind: queue\nname: x\nstart_mode: later\n", "start_mode must be auto or manual"),
        ("kind: queue\nlease_seconds: 3\n", "a queue needs a 'name'"),
        ("queues: [{name: a}]\nextra: 1\n", "groups by kind: queues, workflows (found 'extra')"),
        ("name: a\n", "a document is one resource with a 'kind'"),
        ("queues: {name: a}\n", "'queues' must be a list"),
        ("queues: [{name: a}, {name: a}]\n", "declared twice"),
        ("queues: [{name: a, kind: workflow}]\n", "kind 'workflow' inside a list of queues"),
        ("kind: queue\nname: [x\n", "is not valid YAML at line 3"),
        ("# nothing\n", "declares nothing"),
    ],
)
def test_a_file_that_cannot_be_applied_says_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ApplyError) as raised:
        declarations(write(tmp_path, "q.yaml", text))
    assert message in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match="No file at"):
        declarations(str(tmp_path / "absent.yaml"))


def test_a_queue_is_created_updated_or_left_alone() -> None:
    declared = Declared("queue", "support", {"lease_seconds": 120, "backoff_coefficient": 2}, "q.yaml")
    created = queue_change(declared, None)
    assert (created.action, created.changes) == (
        "created",
        {"lease_seconds": (None, 120), "backoff_coefficient": (None, 2)},
    )

    current = Queue(id="q_1", name="support", lease_seconds=300, backoff_coefficient=2.0, max_attempts=3)
    updated = queue_change(declared, current)
    assert (updated.action, updated.changes) == ("updated", {"lease_seconds": (300, 120)})
    assert updated.to_json()["changes"] == {"lease_seconds": {"from": 300, "to": 120}}

    same = queue_change(declared, current.model_copy(update={"lease_seconds": 120}))
    assert (same.action, same.changes) == ("unchanged", {})
