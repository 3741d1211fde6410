"""Turning list query strings (``status__in=a,b``, ``created_at__gte=…``, ``sort``, ``cursor``) into a ListQuery."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from workloom.domain.actors import ACTOR_KINDS, ORIGIN_KINDS
from workloom.domain.errors import FieldError, ValidationFailed
from workloom.domain.models import TASK_SCOPES
from workloom.domain.priority import PRIORITIES
from workloom.domain.queries import Filter, ListQuery, decode_cursor, parse_sort
from workloom.domain.readiness import APPROVAL_STATES
from workloom.domain.task_states import TASK_STATUSES

MAX_LIMIT = 500


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


def _text(value: str) -> str:
    if not value or len(value) > 200:
        raise ValueError("must be 1 to 200 characters")
    return value


def _datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2030-01-01T00:00:00Z") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TASK_FILTERS: dict[str, tuple[Callable[[str], Any], tuple[str, ...]]] = {
    "status": (_choice(TASK_STATUSES), ("eq", "in")),
    "queue": (_text, ("eq", "in")),
    "priority": (_choice(PRIORITIES), ("eq", "in")),
    "owner_kind": (_choice(ACTOR_KINDS), ("eq", "in")),
    "owner_ref": (_text, ("eq", "in")),
    "parent_task_id": (_text, ("eq", "in")),
    "scope": (_choice(TASK_SCOPES), ("eq", "in")),
    "approval_state": (_choice(APPROVAL_STATES), ("eq", "in")),
    "origin_kind": (_choice(ORIGIN_KINDS), ("eq", "in")),
    "created_at": (_datetime, ("gte", "lte")),
    "updated_at": (_datetime, ("gte", "lte")),
}
TASK_SORTS = ("created_at", "updated_at", "priority", "status", "title", "identifier")
RESERVED = ("q", "sort", "limit", "cursor", "count")


def task_query(params: Mapping[str, str]) -> ListQuery:
    errors: list[FieldError] = []
    query = ListQuery()
    for name, raw in params.items():
        if name in RESERVED:
            continue
        field, _, op = name.partition("__")
        op = op or "eq"
        spec = TASK_FILTERS.get(field)
        if spec is None or op not in spec[1]:
            allowed = ", ".join(f"{f}" + ("" if "eq" in ops else f"__{ops[0]}") for f, (_, ops) in TASK_FILTERS.items())
            errors.append(
                FieldError(name, f"is not a filter; filters are {allowed} (add __in for lists, __gte/__lte for times)")
            )
            continue
        parse = spec[0]
        try:
            value: Any = [parse(v.strip()) for v in raw.split(",") if v.strip()] if op == "in" else parse(raw)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
            continue
        query.filters.append(Filter(field, op, value))
    try:
        query.sort = parse_sort(params.get("sort"), TASK_SORTS, "-created_at")
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    limit = params.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        errors.append(FieldError("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
    else:
        query.limit = int(limit)
    count = params.get("count", "false").lower()
    if count not in ("true", "false", "1", "0"):
        errors.append(FieldError("count", "must be true or false"))
    query.count = count in ("true", "1")
    if "q" in params:
        query.search = params["q"][:200] or None
    if errors:
        raise ValidationFailed(f"invalid query: {', '.join(e.field for e in errors)}", errors)
    cursor = params.get("cursor")
    if cursor:
        query.after = decode_cursor(cursor)
        if len(query.after) != len(query.sort) + 1:
            raise ValidationFailed(
                "cursor does not match the sort order",
                [FieldError("cursor", "use the same sort as the request that returned it")],
            )
    return query
