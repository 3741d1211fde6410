"""Listing queries as data: filters, sort order and a keyset cursor, checked before any SQL is built."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from workloom.domain.errors import FieldError, ValidationFailed

T = TypeVar("T")
FilterOp = str  # "eq" | "in" | "gte" | "lte"


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: FilterOp
    value: Any


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool


@dataclass(slots=True)
class ListQuery:
    filters: list[Filter] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    limit: int = 50
    after: list[Any] | None = None
    count: bool = False
    search: str | None = None


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    total: int | None = None


def parse_sort(text: str | None, allowed: tuple[str, ...], default: str) -> list[SortKey]:
    keys: list[SortKey] = []
    for part in (text or default).split(","):
        part = part.strip()
        if not part:
            continue
        descending = part.startswith("-")
        name = part.lstrip("-+")
        if name not in allowed:
            raise ValidationFailed(
                f"cannot sort by {name!r}",
                [
                    FieldError(
                        "sort", f"{name!r} is not sortable; use one of {', '.join(allowed)} (prefix - for descending)"
                    )
                ],
            )
        keys.append(SortKey(name, descending))
    return keys


def encode_cursor(values: list[Any]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return {"$dt": value.isoformat()}
        raise TypeError

    return (
        base64.urlsafe_b64encode(orjson.dumps(values, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME))
        .decode()
        .rstrip("=")
    )


def decode_cursor(cursor: str) -> list[Any]:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list):
            raise ValueError
        return [datetime.fromisoformat(v["$dt"]) if isinstance(v, dict) and "$dt" in v else v for v in raw]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", [FieldError("cursor", "pass back the next_cursor of a previous page unchanged")]
        ) from exc
