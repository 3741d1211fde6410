"""Planner statistics for the tables every claim and completion reads, kept fresh between autovacuum's visits.

Without statistics PostgreSQL takes every equality to match a handful of rows, and then any index that
starts with the workspace looks as good as the claim index: a fresh queue of 6,000 tasks was claimed
through the dashboard's status index, each claim reading and sorting every queued run of the workspace
(PostgreSQL spent 13 ms per task instead of 3). Autovacuum analyses a table only on its own schedule
(a minute apart by default) and after a tenth of it has changed, so a queue filled in a burst runs on the
wrong plan until then. Analysing as soon as the table's size is far from what the planner believes costs
tens of milliseconds, now and then. Rows that only change status (every claim, every completion) do not
count: re-analysing a table churned at the same size ran every second under load and changed no plan.

What the claim plans turn on most is how many runs are queued, and that can grow far beyond what the
planner believes while the table's size barely moves: a thousand tasks queued into a table of ten thousand
finished runs, analysed when none was queued. The planner then takes the queue to hold a run or two, reads
the unique index of active runs and sorts all of them for every claim (in the bench's `single`, after its
drain, PostgreSQL's CPU a claim doubled). So ``runs`` is also analysed when more runs are queued than
twice what the planner believes, counted through a partial index only as far as that (the count is made
only while the planner believes few are queued: then the index is what it reads, and the cap bounds it).

Only the columns those plans turn on are analysed, from a smaller sample: a full ``ANALYZE`` of 100k tasks
and their runs took ~470 ms of PostgreSQL's CPU (every column's values sorted and counted, the JSON ones
detoasted), and on a loaded two-core machine the creates and claims committing meanwhile waited up to ~60
ms (the latency scenario's p99). These columns, from 9,000 rows, take ~50 ms. Autovacuum still analyses
every column on its own schedule: an ``ANALYZE`` naming columns leaves the table's count of changes
since its last analysis as it was.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.store.database import sqlstate

# The tables whose plans matter on the hot paths, and the columns those plans filter and join on; fixed
# names, never input.
HOT_COLUMNS = {
    "runs": ("workspace_id", "queue_id", "status", "task_id", "available_at", "lease_until"),
    "tasks": ("workspace_id", "queue_id", "status", "parent_task_id", "owner_ref"),
}
HOT_TABLES = tuple(HOT_COLUMNS)
# Rows sampled are 300 times this (PostgreSQL's default is 100): plenty for a column of a few statuses,
# queues and workspaces, and a third of the work.
STATISTICS_TARGET = 30
# One process analyses at a time; the others find the lock taken and skip the turn.
_LOCK_KEY = 0x776C_7374  # "wlst"
LOCK_TIMEOUT_MS = 200
_LOCK_NOT_AVAILABLE = "55P03"

# reltuples is the planner's row count (-1: never analysed); n_live_tup the table's, as counted since.
_STALE = sa.text(
    "SELECT c.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.relid = ANY(CAST(:tables AS regclass[])) AND s.n_mod_since_analyze > :minimum"
    " AND abs(s.n_live_tup - greatest(c.reltuples, 0)) > greatest(:minimum, :fraction * c.reltuples)"
)


# What the planner believes of the queued runs: its row count times the share of 'queued' among the statuses
# it sampled (none there: it believes next to none).
_BELIEVED_QUEUED = sa.text(
    "SELECT greatest(c.reltuples, 0) * coalesce(("
    " SELECT m.freq FROM pg_stats AS p,"
    " unnest(CAST(CAST(p.most_common_vals AS text) AS text[]), p.most_common_freqs) AS m(value, freq)"
    " WHERE p.schemaname = n.nspname AND p.tablename = c.relname AND p.attname = 'status' AND m.value = 'queued'"
    " ), 0) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE c.oid = CAST('runs' AS regclass)"
)
_QUEUED_UP_TO = sa.text("SELECT count(*) FROM (SELECT 1 FROM runs WHERE status = 'queued' LIMIT :cap) AS queued")
# Runs queued past this many times what the planner believes make ``runs`` stale; the count is made only
# while it believes fewer than ``COUNTED_BELOW`` times ``minimum`` are queued (more, and its plans already
# read the claim indexes).
UNDERESTIMATE = 2
COUNTED_BELOW = 10


async def _queued_underestimated(conn: AsyncConnection, minimum: int) -> bool:
    """Whether more runs are queued than ``minimum`` and than ``UNDERESTIMATE`` times the planner's belief."""
    believed = float((await conn.execute(_BELIEVED_QUEUED)).scalar() or 0)
    if believed >= COUNTED_BELOW * minimum:
        return False
    threshold = max(minimum, int(UNDERESTIMATE * believed))
    queued = int((await conn.execute(_QUEUED_UP_TO, {"cap": threshold + 1})).scalar() or 0)
    return queued > threshold


async def analyze_stale(conn: AsyncConnection, *, minimum: int, fraction: float) -> list[str]:
    """ANALYZE each hot table whose live rows are more than ``minimum``, and more than ``fraction``, off the
    count the planner last took, and ``runs`` when far more of them are queued than it believes; the
    tables analysed. PostgreSQL only (SQLite plans by rule)."""
    if conn.dialect.name != "postgresql":
        return []
    if not (await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY)))).scalar():
        return []
    found = await conn.execute(_STALE, {"tables": list(HOT_TABLES), "minimum": minimum, "fraction": fraction})
    stale = [name for (name,) in found if name in HOT_TABLES]
    if "runs" not in stale and await _queued_underestimated(conn, minimum):
        stale.append("runs")
    if stale:
        # The ticker runs this between lease expiries: never wait behind a vacuum of the table.
        await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
        await conn.execute(sa.text(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}"))
    analysed = []
    for name in stale:
        columns = ", ".join(HOT_COLUMNS[name])
        try:
            async with conn.begin_nested():
                await conn.execute(sa.text(f'ANALYZE "{name}" ({columns})'))
        except sa.exc.DBAPIError as error:
            if sqlstate(error) != _LOCK_NOT_AVAILABLE:
                raise
            continue  # autovacuum has the table (and analyses as it goes); the next turn tries again
        analysed.append(name)
    return analysed
