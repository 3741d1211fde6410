"""Named operations on stored idempotent answers."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.fast import Statement, Write
from workloom.store.schema import idempotency_keys

_COLUMNS = ("workspace_id", "key_hash", "request_hash", "status_code", "response", "created_at")


def _get(lock: bool) -> Statement:
    stmt = sa.select(
        idempotency_keys.c.request_hash, idempotency_keys.c.status_code, idempotency_keys.c.response
    ).where(
        idempotency_keys.c.workspace_id == sa.bindparam("workspace_id"),
        idempotency_keys.c.key_hash == sa.bindparam("key_hash"),
    )
    return Statement(stmt.with_for_update() if lock else stmt)


_GET = {False: _get(False), True: _get(True)}
_INSERT = Statement(
    sa.insert(idempotency_keys).values({c: sa.bindparam(c, type_=idempotency_keys.c[c].type) for c in _COLUMNS})
)


async def idempotency_get(
    conn: AsyncConnection, workspace_id: str, key_hash: str, *, lock: bool = False
) -> tuple[str, int | None, bytes | None] | None:
    row = await _GET[lock].first(conn, {"workspace_id": workspace_id, "key_hash": key_hash})
    return (row["request_hash"], row["status_code"], row["response"]) if row else None


def idempotency_write(
    workspace_id: str, key_hash: str, request_hash: str, status_code: int, response: bytes, now: datetime
) -> Write:
    """A stored answer (sealed) under its key's hash, as a write to go with the unit's last rows."""
    row = {
        "workspace_id": workspace_id,
        "key_hash": key_hash,
        "request_hash": request_hash,
        "status_code": status_code,
        "response": response,
        "created_at": now,
    }
    return Write(_INSERT, [row])


async def idempotency_prune(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
    return int(result.rowcount)


async def idempotency_lock(conn: AsyncConnection, workspace_id: str, key_hash: str) -> None:
    """Serialise requests that share a key, so the second waits and then finds the first answer.
    SQLite needs nothing: its transactions already run one at a time."""
    if conn.dialect.name == "postgresql":
        await _LOCK.execute(conn, {"k": _lock_key(workspace_id, key_hash)})


def _lock_key(workspace_id: str, key_hash: str) -> str:
    """What a key's advisory lock is taken on (hashed to the lock's number by PostgreSQL)."""
    return f"{workspace_id}:{key_hash}"


def _advisory(function: str) -> Statement:
    """``SELECT <function>(the key's lock number)``: one of PostgreSQL's transaction-level advisory locks."""
    number = sa.func.hashtextextended(sa.bindparam("k", type_=sa.Text), 0)
    return Statement(sa.select(getattr(sa.func, function)(number).label("locked")))


_LOCK = _advisory("pg_advisory_xact_lock")
_TRY_LOCK = _advisory("pg_try_advisory_xact_lock")


async def idempotency_take_if_free(conn: AsyncConnection, workspace_id: str, key_hash: str) -> bool:
    """Whether this transaction may store the key's answer now, without waiting: (PostgreSQL) its lock was
    free, and is now held until commit, and no answer is stored under it. For a transaction that answers a
    request other than its own (a hand-off to a claimer waiting under the key), which must not wait on it.

    The stored answer is looked for in a statement of its own once the lock is held: a statement sees what
    had committed when it began, so looked for in the locking one, an answer committed by the lock's
    holder while that statement ran would be missed, and a second answer stored under the key."""
    if conn.dialect.name == "postgresql":
        row = await _TRY_LOCK.first(conn, {"k": _lock_key(workspace_id, key_hash)})
        if not (row and row["locked"]):
            return False
    return await idempotency_get(conn, workspace_id, key_hash) is None
