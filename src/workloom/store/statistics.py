"""Planner statistics for the tables every claim and completion reads, kept fresh between autovacuum's visits.

Without statistics PostgreSQL takes every equality to match a handful of rows, and then any index that
starts with the workspace looks as good as the claim index: a fresh queue of 6,000 tasks was claimed
through the dashboard's status index, each claim reading and sorting every queued run of the workspace
(PostgreSQL spent 13 ms per task instead of 3). Autovacuum analyses a table only on its own schedule
(a minute apart by default) and after a tenth of it has changed, so a queue filled in a burst runs on the
wrong plan until then. Analysing as soon as enough has changed costs tens of milliseconds, now and then.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# The tables whose plans matter on the hot paths; fixed names, never input.
HOT_TABLES = ("runs", "tasks")
# One process analyses at a time; the others find the lock taken and skip the turn.
_LOCK_KEY = 0x776C_7374  # "wlst"

_STALE = sa.text(
    "SELECT relname FROM pg_stat_user_tables"
    " WHERE relid = ANY(CAST(:tables AS regclass[]))"
    " AND n_mod_since_analyze > greatest(:minimum, :fraction * n_live_tup)"
)


async def analyze_stale(conn: AsyncConnection, *, minimum: int, fraction: float) -> list[str]:
    """ANALYZE each hot table in which more than ``minimum`` rows, and more than ``fraction`` of its live
    rows, changed since it was last analysed; the tables analysed. PostgreSQL only (SQLite plans by rule)."""
    if conn.dialect.name != "postgresql":
        return []
    if not (await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY)))).scalar():
        return []
    found = await conn.execute(_STALE, {"tables": list(HOT_TABLES), "minimum": minimum, "fraction": fraction})
    stale = [name for (name,) in found if name in HOT_TABLES]
    for name in stale:
        await conn.execute(sa.text(f'ANALYZE "{name}"'))
    return stale
