"""a key's lock and its stored answer in one round trip

Revision ID: 0006
Revises: 0005

A call under an idempotency key takes the key's advisory lock, then looks for the answer stored under it.
The look must be a statement of its own, begun once the lock is held: a statement sees what had committed
when it began, so one that waited for the lock in the same statement would miss the answer its holder
committed meanwhile. That was two round trips on every keyed call (the SDK's worker keys every claim and
completion) and on every hand-off to a keyed claimer. A PL/pgSQL function runs each of its queries with a
snapshot of its own, taken when that query begins: the lock and then the look, in one call.

The lock is the one earlier servers take (``hashtextextended('<workspace>:<key hash>', 0)``), so servers of
both releases serialise calls under one key during a rolling upgrade. PostgreSQL only: SQLite's
transactions already run one at a time.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FUNCTION = "workloom_idempotency_enter(text, text, boolean)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION workloom_idempotency_enter(p_workspace_id text, p_key_hash text, p_wait boolean)
        RETURNS TABLE (locked boolean, request_hash text, status_code integer, response bytea)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            lock_number bigint := hashtextextended(p_workspace_id || ':' || p_key_hash, 0);
        BEGIN
            IF p_wait THEN
                PERFORM pg_advisory_xact_lock(lock_number);
            ELSIF NOT pg_try_advisory_xact_lock(lock_number) THEN
                RETURN QUERY SELECT false, NULL::text, NULL::integer, NULL::bytea;
                RETURN;
            END IF;
            -- A query of its own, so a snapshot taken now that the lock is held.
            RETURN QUERY
                SELECT true, k.request_hash::text, k.status_code, k.response
                FROM idempotency_keys AS k
                WHERE k.workspace_id = p_workspace_id AND k.key_hash = p_key_hash;
            IF NOT FOUND THEN
                RETURN QUERY SELECT true, NULL::text, NULL::integer, NULL::bytea;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}")
