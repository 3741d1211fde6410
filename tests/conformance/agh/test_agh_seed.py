"""The seed document as the suite reads it, and a check that every operation in it is exercised."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from agh_check import conformance_problems, values_at
from agh_seed import SEED, enum_sets, field_enums, load, operations
from fastapi import FastAPI

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"{\w+}")
DOCUMENTED_FILTERS = (
    "scope",
    "workspace",
    "status",
    "priority",
    "include_drafts",
    "approval_state",
    "owner_kind",
    "owner_ref",
    "parent_task_id",
    "network_channel",
    "query",
    "limit",
    "lane",
    "unread",
    "origin_kind",
    "session_id",
    "after_sequence",
)


def test_every_operation_line_of_the_document_is_parsed() -> None:
    assert SEED.is_file()
    lines = re.findall(r"^(?:GET|POST|PUT|PATCH|DELETE)/\S*$", load(), flags=re.MULTILINE)
    ops = operations()
    assert len(ops) == len(lines) >= 34
    for op in ops.values():
        assert op.summary, op.key
        assert op.path.startswith("/api/"), op.key
        assert set(re.findall(r"{(\w+)}", op.path)) == set(op.path_params), op.key
        # Every operation documents its error body the same way.
        assert op.errors, op.key
        assert all(e in (None, {"error": "string"}) for e in op.errors), op.key


def test_the_document_yields_the_enums_and_filters_the_issue_names() -> None:
    sets = enum_sets()
    assert {"scope", "status", "priority", "approval_state", "owner_kind", "origin_kind", "lane"} <= set(sets)
    statuses = {values[0]: values for values in sets["status"]}
    assert set(statuses) == {"draft", "queued"}  # the task statuses and the run statuses
    documented = {name for op in operations().values() for name in op.query_params}
    assert set(DOCUMENTED_FILTERS) <= documented


def test_field_paths_and_enums_come_from_the_examples() -> None:
    ops = operations()
    claim = ops["POST /api/agent/tasks/claim-next"]
    assert {"claim.run.claim_token_hash", "claim.task.owner.kind", "claim.lease.lease_until"} <= claim.field_paths()
    assert "draft" in field_enums(claim)["claim.task.status"]
    assert "queued" in field_enums(claim)["claim.run.status"]
    listing = ops["GET /api/tasks"]
    assert {"tasks", "tasks[].identifier", "tasks[].dependencies[].depends_on.scope"} <= listing.field_paths()
    assert field_enums(listing)["tasks[].origin.kind"][0] == "cli"
    assert ops["DELETE /api/tasks/{id}"].success is None
    assert ops["POST /api/task-runs/{id}/attach-session"].body_fields["session_id"].required


def test_the_checker_accepts_nulls_and_refuses_gaps() -> None:
    op = operations()["POST /api/tasks/{id}/triage/read"]
    good = {"triage": {**{k: None for k in op.success["triage"]}, "read": True, "task_id": "t"}}
    assert conformance_problems(op, good) == []
    assert values_at({"a": None}, "a.b[].c") == ([], [])
    missing = {"triage": {"read": True}}
    assert any("triage.task_id: missing" in p for p in conformance_problems(op, missing))
    wrong_enum = {"triage": {**good["triage"], "actor": {"kind": "robot", "ref": "x"}}}
    assert any("robot" in p for p in conformance_problems(op, wrong_enum))


def test_every_operation_is_exercised_by_the_suite() -> None:
    """Each ``"METHOD /path"`` of the document appears as a literal in a test module that calls it."""
    named: set[str] = set()
    for module in HERE.glob("test_agh_*.py"):
        if module.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named.add(node.value)
    missing = sorted(set(operations()) - named)
    assert not missing, f"operations no test calls: {missing}"


def _shape(method: str, path: str) -> str:
    return f"{method.upper()} {PLACEHOLDER.sub('{}', path)}"


def test_the_dialect_serves_exactly_the_documented_operations() -> None:
    from workloom.dialects.agh.app import build

    host = FastAPI()
    host.state.settings = None
    host.state.stopping = None
    spec = build(host).openapi()
    served = {_shape(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == {_shape(op.method, op.path) for op in operations().values()}
