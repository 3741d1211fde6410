"""The AGH seed document, read at test time: its operations, parameters, enums and response shapes.

Nothing here is copied from the document: every expectation the conformance tests check comes from
parsing ``../shared/seeds/004_987cd13cc7aedb9a.txt`` itself, so the tests cannot drift from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SEED = Path(__file__).resolve().parents[3].parent / "shared" / "seeds" / "004_987cd13cc7aedb9a.txt"

_OPERATION = re.compile(r"^(GET|POST|PUT|PATCH|DELETE)(/\S*)$")
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)([*?])(string|integer|boolean|number|unknown|object|array)$")
_VALUE_IN = re.compile(r'^Value in(".*")$')
_CURL_BODY = re.compile(r"-d '(.*)'\s*$")
_SECTIONS = {
    "Path Parameters": "path",
    "Query Parameters": "query",
    "Request Body": "body",
    "Response Body": "response",
}


@dataclass
class Param:
    name: str
    type: str
    required: bool
    enum: tuple[str, ...] | None = None


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    path_params: dict[str, Param] = field(default_factory=dict)
    query_params: dict[str, Param] = field(default_factory=dict)
    body_fields: dict[str, Param] = field(default_factory=dict)
    request_example: Any = None
    success: Any = None  # the first response example; None when the document shows "Empty"
    errors: list[Any] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def streams(self) -> bool:
        return self.path.endswith("/stream")

    def field_paths(self) -> set[str]:
        return set(leaves(self.success)) if self.success is not None else set()


def load() -> str:
    if not SEED.is_file():
        raise FileNotFoundError(
            f"the AGH seed document is missing: {SEED}. The conformance suite reads it at test time; "
            "check out the shared/ folder beside the repository."
        )
    return SEED.read_text()


@cache
def operations() -> dict[str, Operation]:
    """Every operation of the document, keyed ``"METHOD /path"`` (``{param}`` placeholders kept)."""
    lines = load().splitlines()
    starts = [i for i, line in enumerate(lines) if _OPERATION.match(line.strip())]
    found: dict[str, Operation] = {}
    for n, start in enumerate(starts):
        # The block runs to the summary line of the next operation (the last non-empty line before it).
        end = len(lines)
        if n + 1 < len(starts):
            end = starts[n + 1] - 1
            while end > start and not lines[end - 1].strip():
                end -= 1
            end -= 1
        op = _parse_block(lines, start, end)
        if op.key in found:
            raise ValueError(f"the seed documents {op.key} twice")
        found[op.key] = op
    return found


def _summary(lines: list[str], start: int) -> str:
    i = start - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    return lines[i].strip() if i >= 0 else ""


def _parse_block(lines: list[str], start: int, end: int) -> Operation:
    method, path = _OPERATION.match(lines[start].strip()).groups()  # type: ignore[union-attr]
    op = Operation(method=method, path=path, summary=_summary(lines, start))
    section: str | None = None
    last: Param | None = None
    i = start + 1
    while i < end:
        line = lines[i].strip()
        if line in _SECTIONS:
            section = _SECTIONS[line]
            last = None
        elif line.startswith("curl "):
            body = _CURL_BODY.search(line)
            if body:
                op.request_example = json.loads(body.group(1))
            examples = _examples("\n".join(lines[i + 1 : end]))
            if examples:
                op.success = examples[0]
                op.errors = examples[1:]
            break
        elif (param := _PARAM.match(line)) and section in ("path", "query", "body"):
            name, mark, kind = param.groups()
            last = Param(name=name, type=kind, required=mark == "*")
            target = {"path": op.path_params, "query": op.query_params, "body": op.body_fields}[section]
            target[name] = last
        elif (values := _VALUE_IN.match(line)) and last is not None:
            last.enum = tuple(v.strip().strip('"') for v in values.group(1).split("|"))
        i += 1
    return op


def _examples(text: str) -> list[Any]:
    """The JSON values (or ``None`` for "Empty") shown one after another after the curl line."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        if text.startswith("Empty", pos):
            out.append(None)
            pos += len("Empty")
            continue
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    # A trailing "Empty" closes every block (the default response); it is not an example.
    while out and out[-1] is None and len(out) > 1:
        out.pop()
    return out


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Field paths of an example (``task.owner.kind``, ``tasks[].id``) mapped to their example value."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if prefix:
            out[prefix] = value
        for key, inner in value.items():
            out.update(leaves(inner, f"{prefix}.{key}" if prefix else key))
    elif isinstance(value, list):
        out[prefix] = value
        for inner in value[:1]:
            out.update(leaves(inner, f"{prefix}[]"))
    else:
        out[prefix] = value
    return out


@cache
def enum_sets() -> dict[str, list[tuple[str, ...]]]:
    """Every documented "Value in" list, by parameter name (one name can carry several sets)."""
    sets: dict[str, list[tuple[str, ...]]] = {}
    for op in operations().values():
        for param in (*op.path_params.values(), *op.query_params.values(), *op.body_fields.values()):
            if param.enum is not None and param.enum not in sets.setdefault(param.name, []):
                sets[param.name].append(param.enum)
    return sets


def _related(leaf: str, param: str) -> bool:
    if leaf == param or leaf.endswith("_" + param):
        return True
    return leaf == "kind" and param.endswith("_kind")


def enum_for(path: str, example: Any) -> tuple[str, ...] | None:
    """The documented value set a response field belongs to: the set of a parameter named like the field
    (``status``, ``task_priority`` → priority, ``owner.kind`` → owner_kind) that holds the example value."""
    if not isinstance(example, str):
        return None
    leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
    candidates = {
        values for param, sets in enum_sets().items() if _related(leaf, param) for values in sets if example in values
    }
    if len(candidates) != 1:
        return None
    return candidates.pop()


def field_enums(op: Operation) -> dict[str, tuple[str, ...]]:
    """For the operation's success example: field path → the values that field may take."""
    out: dict[str, tuple[str, ...]] = {}
    for path, example in leaves(op.success).items() if op.success is not None else ():
        values = enum_for(path, example)
        if values is not None:
            out[path] = values
    return out
