"""Named operations on stored idempotent answers."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.fast import Statement, Write
from workloom.store.schema import idempotency_keys

_COLUMNS = ("workspace_id", "key_hash", "request_hash", "status_code", "response", "created_at")


_GET = Statement(
    sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.status_code, idempotency_keys.c.response).where(
        idempotency_keys.c.workspace_id == sa.bindparam("workspace_id"),
        idempotency_keys.c.key_hash == sa.bindparam("key_hash"),
    )
)
_INSERT = Statement(
    sa.insert(idempotency_keys).values({c: sa.bindparam(c, type_=idempotency_keys.c[c].type) for c in _COLUMNS})
)
# PostgreSQL: the answer inserted only if the key's lock is free and no answer is stored under it, else the
# statement refused (``database.is_key_busy``, migration 0006): the lock and the look in the writing statement.
_INSERT_IF_FREE = Statement(
    sa.insert(idempotency_keys).from_select(
        _COLUMNS,
        sa.select(*(sa.bindparam(c, type_=idempotency_keys.c[c].type) for c in _COLUMNS)).where(
            sa.func.workloom_idempotency_free(
                sa.bindparam("workspace_id", type_=idempotency_keys.c.workspace_id.type),
                sa.bindparam("key_hash", type_=idempotency_keys.c.key_hash.type),
            )
        ),
    )
)
# PostgreSQL: the key's advisory lock and then the answer stored under it, in one statement (migration 0006).
_ENTERED = sa.func.workloom_idempotency_enter(
    sa.bindparam("workspace_id", type_=sa.Text), sa.bindparam("key_hash", type_=sa.Text)
).table_valued(
    sa.column("request_hash", sa.Text), sa.column("status_code", sa.Integer), sa.column("response", sa.LargeBinary)
)
_ENTER = Statement(sa.select(_ENTERED.c.request_hash, _ENTERED.c.status_code, _ENTERED.c.response))

# PostgreSQL: ``_ENTER`` for many keys in one statement, their locks taken in the order given.
_ENTER_MANY = Statement(
    sa.text(
        "SELECT k.key_hash, e.request_hash, e.status_code, e.response"
        " FROM unnest(CAST(:key_hashes AS text[])) WITH ORDINALITY AS k(key_hash, n)"
        " LEFT JOIN LATERAL workloom_idempotency_enter(CAST(:workspace_id AS text), k.key_hash) AS e ON true"
        " ORDER BY k.n"
    )
    .bindparams(sa.bindparam("key_hashes", type_=ARRAY(sa.Text)), sa.bindparam("workspace_id", type_=sa.Text))
    .columns(key_hash=sa.Text, request_hash=sa.Text, status_code=sa.Integer, response=sa.LargeBinary)
)

# The request's hash, and the stored answer's status code and sealed body.
Stored = tuple[str, int | None, bytes | None]


async def idempotency_get(conn: AsyncConnection, workspace_id: str, key_hash: str) -> Stored | None:
    return await _stored(_GET, conn, workspace_id, key_hash)


async def idempotency_enter(conn: AsyncConnection, workspace_id: str, key_hash: str) -> Stored | None:
    """Take the key's lock, waiting for it, then return the answer stored under it, if any: requests that
    share a key run one after another, and the second finds the first one's answer. SQLite needs no lock:
    its transactions already run one at a time."""
    return await _stored(_ENTER if conn.dialect.name == "postgresql" else _GET, conn, workspace_id, key_hash)


async def idempotency_enter_many(
    conn: AsyncConnection, workspace_id: str, key_hashes: list[str]
) -> dict[str, Stored | None]:
    """``idempotency_enter`` for several keys (in the order of their hashes, as every caller takes them, so
    that two transactions taking some of the same keys wait rather than deadlock): on PostgreSQL in one
    statement."""
    ordered = sorted(set(key_hashes))
    if conn.dialect.name != "postgresql":
        return {key_hash: await _stored(_GET, conn, workspace_id, key_hash) for key_hash in ordered}
    rows = await _ENTER_MANY.rows(conn, {"workspace_id": workspace_id, "key_hashes": ordered})
    return {
        row["key_hash"]: (row["request_hash"], row["status_code"], row["response"])
        if row["request_hash"] is not None
        else None
        for row in rows
    }


async def _stored(statement: Statement, conn: AsyncConnection, workspace_id: str, key_hash: str) -> Stored | None:
    row = await statement.first(conn, {"workspace_id": workspace_id, "key_hash": key_hash})
    return (row["request_hash"], row["status_code"], row["response"]) if row else None


def idempotency_write(
    workspace_id: str,
    key_hash: str,
    request_hash: str,
    status_code: int,
    response: bytes,
    now: datetime,
    *,
    if_free: bool = False,
) -> Write:
    """A stored answer (sealed) under its key's hash, as a write to go with the unit's last rows. ``if_free``
    (PostgreSQL): only if the key's lock is free and no answer is stored under it yet, else the statement
    that carries it fails (``database.is_key_busy``; a hand-off to a claimer waiting under the key)."""
    row = {
        "workspace_id": workspace_id,
        "key_hash": key_hash,
        "request_hash": request_hash,
        "status_code": status_code,
        "response": response,
        "created_at": now,
    }
    return Write(_INSERT_IF_FREE if if_free else _INSERT, [row])


async def idempotency_prune(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
    return int(result.rowcount)
