"""Named operations on the append-only event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.models import Event
from workloom.store import rows
from workloom.store.fast import Statements, Write
from workloom.store.schema import events


def _insert(dialect: str, names: tuple[str, ...]) -> sa.Insert:
    return sa.insert(events).values({n: sa.bindparam(n, type_=events.c[n].type) for n in names})


_INSERT = Statements(_insert)


def event_inserts(rows_: list[dict[str, Any]]) -> list[Write]:
    """The insert of events (all of one row shape), for ``fast.write_all``."""
    return [Write(_INSERT.for_columns(rows_[0]), rows_)] if rows_ else []


async def event_list_for_task(
    conn: AsyncConnection, workspace_id: str, task_id: str, *, after_sequence: int = 0, limit: int = 1000
) -> list[Event]:
    result = await conn.execute(
        sa.select(events)
        .where(
            events.c.workspace_id == workspace_id, events.c.task_id == task_id, events.c.task_sequence > after_sequence
        )
        .order_by(events.c.task_sequence)
        .limit(limit)
    )
    return [rows.event(row) for row in result.mappings()]


# The transactions of this database in flight when the statement's snapshot was taken: the snapshot's own
# list (so that one ending just after is still in it), less those of sessions on other databases (a long
# transaction elsewhere on the server is none of a stream's business). Transaction ids as 64-bit numbers;
# pg_stat_activity has the 32-bit id, compared with the low half.
_IN_FLIGHT: sa.ColumnClause[Any] = sa.literal_column(
    "(SELECT coalesce(array_agg(x::text::bigint), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) AS x"
    " WHERE (x::text::bigint & 4294967295) NOT IN (SELECT backend_xid::text::bigint FROM pg_stat_activity"
    " WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL))"
)
_WHOLE: sa.ColumnClause[Any] = sa.literal_column("NULL::bigint[]")
# How many numbers past the cursor a read checks for gaps (an index-only count of every workspace's
# events); past it, the read waits on the transactions in flight instead.
GAP_CHECK_SPAN = 5000


async def event_list_after(
    conn: AsyncConnection, workspace_id: str, *, after: int, limit: int = 500
) -> tuple[list[Event], frozenset[int] | None]:
    """Events after a global sequence, in order; and, where some number below the last one read is missing,
    the transactions of this database in flight that may yet commit it (None where none is missing).

    On PostgreSQL a number is taken before its transaction commits, so a smaller one can commit later. None
    can where every number from ``after`` to the last event read belongs to a committed event, of any
    workspace (counted in the same snapshot). Else the answer is every transaction in flight at the read's
    snapshot — which may be none even so: a transaction whose first write is its events takes their numbers
    just before it takes its transaction id (``engine.events._Horizon`` reads again before trusting that).
    On SQLite, whose commits are serial, nothing is ever missing."""
    selected = (
        sa.select(events)
        .where(events.c.workspace_id == workspace_id, events.c.sequence > after)
        .order_by(events.c.sequence)
        .limit(limit)
    )
    if conn.dialect.name != "postgresql":
        return [rows.event(row) for row in (await conn.execute(selected)).mappings()], None
    batch = selected.cte("batch")
    last = sa.select(sa.func.max(batch.c.sequence)).scalar_subquery()
    present = (
        sa.select(sa.func.count())
        .where(events.c.sequence > after, events.c.sequence <= sa.func.least(last, after + GAP_CHECK_SPAN))
        .scalar_subquery()
    )
    # Whole: the in-flight list (pg_stat_activity, the costlier part) is not even made, as a CASE branch
    # not taken never runs its subquery.
    in_flight = sa.case((present == last - after, _WHOLE), else_=_IN_FLIGHT)
    stmt = sa.select(batch, in_flight.label("in_flight")).order_by(batch.c.sequence)
    found = (await conn.execute(stmt)).mappings().all()
    if not found or found[0]["in_flight"] is None:
        return [rows.event(row) for row in found], None
    return [rows.event(row) for row in found], frozenset(found[0]["in_flight"])


async def event_last_sequence(conn: AsyncConnection, workspace_id: str) -> int:
    result = await conn.execute(sa.select(sa.func.max(events.c.sequence)).where(events.c.workspace_id == workspace_id))
    return int(result.scalar_one() or 0)


async def event_count_by_type_since(conn: AsyncConnection, since: datetime) -> list[tuple[str, int]]:
    result = await conn.execute(
        sa.select(events.c.type, sa.func.count()).where(events.c.created_at >= since).group_by(events.c.type)
    )
    return [(r[0], int(r[1])) for r in result]
