"""``workloom apply -f FILE``: declare resources in YAML or JSON and make the workspace match them.

A file holds one or more documents (YAML ``---`` separated, or a JSON value). A document is one resource
with a ``kind`` (``kind: queue`` plus its fields), a list of such resources, or groups by kind in plural
(``queues: [{name: …, lease_seconds: …}, …]``). Each resource is created if it does not exist, updated
where its declared fields differ, and left alone otherwise; fields it does not declare are not touched.

Kinds are looked up in ``KINDS``: a new kind (workflows, when they exist) is one more ``Kind`` there.
Every document is read and checked before anything is changed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import yaml
from rich.table import Table
from rich.text import Text

from workloom.cli.http import Hints, connect, hint_for
from workloom.cli.output import compact, console, fail, note, print_json
from workloom.client import Client, ConflictError, NotFoundError, Queue, QueueSettings, TransportError, WorkloomError

ACTION_STYLES = {"created": "green", "updated": "yellow", "unchanged": "dim"}


class ApplyError(Exception):
    """A file that cannot be applied: the message says where and what to write instead."""


@dataclass(frozen=True, slots=True)
class Declared:
    """One resource as the file declares it; ``where`` locates it for messages."""

    kind: str
    name: str
    fields: dict[str, Any]
    where: str


@dataclass(slots=True)
class Change:
    """What applying one resource does: ``action`` is created, updated or unchanged; ``changes`` maps each
    field to its ``(before, after)`` (``before`` is ``None`` for a resource that is created)."""

    declared: Declared
    action: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.declared.kind,
            "name": self.declared.name,
            "action": self.action,
            "changes": {name: {"from": old, "to": new} for name, (old, new) in self.changes.items()},
        }


@dataclass(frozen=True, slots=True)
class Kind:
    """How to apply one kind of resource: check a declaration, compare it with the server, make it so."""

    name: str
    plural: str
    check: Callable[[dict[str, Any], str], Declared]
    plan: Callable[[Client, list[Declared]], list[Change]]
    apply: Callable[[Client, Change], Change]


# -- queues ---------------------------------------------------------------------------------------------

QUEUE_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "description": (str, "text"),
    "lease_seconds": (int, "a whole number of seconds (1 to 86400)"),
    "max_attempts": (int, "a whole number (1 to 1000)"),
    "initial_interval_seconds": ((int, float), "a number of seconds (0 to 86400)"),
    "backoff_coefficient": ((int, float), "a number (1 to 100)"),
    "max_interval_seconds": ((int, float), "a number of seconds (0 to 86400)"),
    "start_mode": (str, "auto or manual"),
}


def check_queue(raw: dict[str, Any], where: str) -> Declared:
    values = dict(raw)
    values.pop("kind", None)
    settings = values.pop("settings", None)
    if settings is not None:
        if not isinstance(settings, dict):
            raise ApplyError(f"{where}: 'settings' must be a mapping of queue fields.")
        values = {**values, **settings}
    name = values.pop("name", None)
    if not isinstance(name, str) or not name.strip():
        raise ApplyError(f"{where}: a queue needs a 'name' (text), e.g. name: support.")
    where = f"{where} (queue {name!r})"
    unknown = sorted(set(values) - set(QUEUE_FIELDS))
    if unknown:
        raise ApplyError(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"a queue has name, {', '.join(QUEUE_FIELDS)}."
        )
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue  # not declared: left as it is
        expected, described = QUEUE_FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ApplyError(f"{where}: {key} must be {described}, not {json.dumps(value, default=str)}.")
        if key == "start_mode" and value not in ("auto", "manual"):
            raise ApplyError(f"{where}: start_mode must be auto or manual, not {value!r}.")
        fields[key] = value
    return Declared("queue", name, fields, where)


def plan_queues(client: Client, declared: list[Declared]) -> list[Change]:
    existing = {queue.name: queue for queue in client.list_queues()}
    return [queue_change(item, existing.get(item.name)) for item in declared]


def queue_change(item: Declared, current: Queue | None) -> Change:
    if current is None:
        return Change(item, "created", {key: (None, value) for key, value in item.fields.items()})
    changes = {
        key: (getattr(current, key, None), value)
        for key, value in item.fields.items()
        if getattr(current, key, None) != value
    }
    return Change(item, "updated" if changes else "unchanged", changes)


def apply_queue(client: Client, change: Change) -> Change:
    item = change.declared
    settings = cast(QueueSettings, dict(item.fields))  # its keys were checked by check_queue
    if change.action == "created":
        try:
            client.create_queue(item.name, **settings)
            return change
        except ConflictError:  # made since the plan (another apply, or a task naming it): update instead
            change = queue_change(item, client.get_queue(item.name))
    if change.action == "updated":
        changed = cast(QueueSettings, {key: new for key, (_, new) in change.changes.items()})
        client.update_queue(item.name, **changed)
    return change


KINDS: dict[str, Kind] = {
    "queue": Kind("queue", "queues", check_queue, plan_queues, apply_queue),
}
# Kinds the design has but this version cannot apply yet: a file using them gets this message.
PLANNED_KINDS: dict[str, str] = {
    "workflow": "workflows cannot be applied yet: this version of Workloom applies queues only.",
}


# -- reading files --------------------------------------------------------------------------------------


def read_documents(path: str) -> list[Any]:
    """The documents of a YAML or JSON file (``-`` reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ApplyError(f"No file at {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ApplyError(f"Cannot read {path}: {exc}") from None
    if path.endswith(".json"):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise ApplyError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ApplyError(f"{path} is not valid YAML{at}: {problem}.") from None


def resources(documents: list[Any], source: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(kind, fields, where)`` for each resource the documents declare, in order."""
    plurals = {kind.plural: kind.name for kind in KINDS.values()}
    plurals.update({f"{name}s": name for name in PLANNED_KINDS})
    for number, document in enumerate(documents, 1):
        where = f"{source}, document {number}" if len(documents) > 1 else source
        if document is None:
            continue
        if isinstance(document, list):
            for index, item in enumerate(document):
                yield from _one(item, None, f"{where}, item {index + 1}")
            continue
        if not isinstance(document, dict):
            raise ApplyError(f"{where}: expected a mapping (kind: queue, name: …) or a list, not {compact(document)}.")
        if "kind" in document:
            yield from _one(document, None, where)
            continue
        groups = [key for key in document if key in plurals]
        others = sorted(set(document) - set(groups))
        if not groups or others:
            known = ", ".join(sorted(plurals))
            found = f" (found {', '.join(map(repr, others))})" if others else ""
            raise ApplyError(
                f"{where}: a document is one resource with a 'kind' (kind: queue) or groups by kind: {known}{found}."
            )
        for key in groups:
            items = document[key]
            if not isinstance(items, list):
                raise ApplyError(f"{where}: '{key}' must be a list, e.g. {key}: [{{name: support}}].")
            for index, item in enumerate(items):
                yield from _one(item, plurals[key], f"{where}, {key}[{index}]")


def _one(item: Any, kind: str | None, where: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    if not isinstance(item, dict):
        raise ApplyError(f"{where}: expected a mapping of fields, not {compact(item)}.")
    declared_kind = item.get("kind", kind)
    if kind is not None and declared_kind != kind:
        raise ApplyError(f"{where}: kind {declared_kind!r} inside a list of {kind}s.")
    if not isinstance(declared_kind, str):
        raise ApplyError(f"{where}: no kind; add kind: {' or '.join(KINDS)}.")
    yield declared_kind, item, where


def declarations(path: str) -> list[Declared]:
    """Every resource in the file, checked; raises ``ApplyError`` naming the first problem."""
    source = "standard input" if path == "-" else path
    found: list[Declared] = []
    seen: dict[tuple[str, str], str] = {}
    for kind_name, raw, where in resources(read_documents(path), source):
        kind = KINDS.get(kind_name)
        if kind is None:
            if kind_name in PLANNED_KINDS:
                raise ApplyError(f"{where}: {PLANNED_KINDS[kind_name]}")
            raise ApplyError(f"{where}: unknown kind {kind_name!r}; kinds that can be applied: {', '.join(KINDS)}.")
        declared = kind.check(raw, where)
        key = (declared.kind, declared.name)
        if key in seen:
            raise ApplyError(f"{declared.where}: declared twice (first at {seen[key]}).")
        seen[key] = declared.where
        found.append(declared)
    if not found:
        raise ApplyError(f"{source} declares nothing; e.g.\n  kind: queue\n  name: support\n  lease_seconds: 120")
    return found


# -- the command ----------------------------------------------------------------------------------------

HINTS: Hints = {
    NotFoundError: "The resource went away while applying; run the same command again.",
}


def apply(
    file: Annotated[str, typer.Option("--file", "-f", help="YAML or JSON file of resources ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change, change nothing.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create or update the queues a file declares (workflows too, once they exist).

    The file is YAML (several documents split by ---) or JSON. Each resource is either a document of its own:

        kind: queue
        name: support
        lease_seconds: 120
        max_attempts: 5

    or one of a list by kind:

        queues:
          - name: support
            start_mode: manual
          - name: billing

    Queue fields: description, lease_seconds, max_attempts, initial_interval_seconds, backoff_coefficient,
    max_interval_seconds, start_mode (auto or manual). Fields left out are not changed.
    """
    try:
        declared = declarations(file)
    except ApplyError as exc:
        fail(str(exc), hint="See 'workloom apply --help' for the file's form.")
    by_kind: dict[str, list[Declared]] = {}
    for item in declared:
        by_kind.setdefault(item.kind, []).append(item)
    done: list[Change] = []
    with connect() as client:
        planned = [change for kind, items in by_kind.items() for change in KINDS[kind].plan(client, items)]
        if dry_run:
            done = planned
        else:
            for change in planned:
                try:
                    done.append(KINDS[change.declared.kind].apply(client, change))
                except TransportError:
                    raise
                except WorkloomError as exc:
                    if done and not json_output:
                        console.print(result_table(done, dry_run=False))
                    action = {"created": "create", "updated": "update"}.get(change.action, "apply")
                    fail(f"Could not {action} {change.declared.where}: {exc}", hint=hint_for(exc, HINTS))
    if json_output:
        print_json({"dry_run": dry_run, "results": [change.to_json() for change in done]})
        return
    console.print(result_table(done, dry_run=dry_run))
    note(summary_line(done, dry_run=dry_run, source=source_name(file)))


def source_name(path: str) -> str:
    return "standard input" if path == "-" else path


def summary_line(changes: list[Change], *, dry_run: bool, source: str) -> str:
    words = {"created": "to create", "updated": "to update"} if dry_run else {}
    counts = {action: sum(1 for c in changes if c.action == action) for action in ("created", "updated", "unchanged")}
    summary = ", ".join(f"{n} {words.get(action, action)}" for action, n in counts.items() if n)
    return f"Dry run of {source}: nothing was changed ({summary})." if dry_run else f"Applied {source}: {summary}."


def result_table(changes: list[Change], *, dry_run: bool) -> Table:
    table = Table("kind", "name", "action", "changes", title="Dry run" if dry_run else None)
    for change in changes:
        action = change.action
        label = {"created": "would create", "updated": "would update"}.get(action, action) if dry_run else action
        table.add_row(
            change.declared.kind,
            change.declared.name,
            Text(label, style=ACTION_STYLES.get(action, "")),
            describe_changes(change),
        )
    return table


def describe_changes(change: Change) -> str:
    if change.action == "created":
        return ", ".join(f"{key}={compact(new)}" for key, (_, new) in change.changes.items()) or "(server defaults)"
    return ", ".join(f"{key}: {compact(old)} → {compact(new)}" for key, (old, new) in change.changes.items())
