"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Always timezone-aware UTC in Python; SQLite stores it naive (in UTC) so text order is time order."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        if value.tzinfo is not UTC:  # the engine's clock gives UTC already: no new object for those
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        # SQLite's is two conversions per value (to naive UTC, then to text); one cached step instead, since
        # the rows of a unit of work mostly carry the same instant.
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # SQLite's is a regular expression, then a second step to make the value aware; one cached step
        # instead (a claim's rows carry the same few instants), which a drain spent a twentieth of its time in.
        if dialect.name == "sqlite":
            return _sqlite_value
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=512)
def _sqlite_text(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite ``DATETIME`` stores for ``value`` (in UTC), so that stored values compare
    as text in time order whichever path wrote them."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


@lru_cache(maxsize=512)
def _sqlite_value(text: str | None) -> datetime | None:
    """The aware UTC datetime of a value stored as ``_sqlite_text`` writes it (or as SQLAlchemy does)."""
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


JsonValue: sa.types.TypeEngine[Any] = sa.JSON().with_variant(JSONB(), "postgresql")
BigId: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
