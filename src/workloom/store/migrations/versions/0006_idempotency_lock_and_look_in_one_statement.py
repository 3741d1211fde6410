"""an idempotency key's lock and the look for its answer in one statement

Revision ID: 0006
Revises: 0005

Calls that share an idempotency key run one after another: each takes the key's advisory lock, then looks
for the answer stored under it. The look must begin once the lock is held: a statement sees what had
committed when it began, so one that waited for the lock in the same query would miss the answer its
holder committed meanwhile. A PL/pgSQL function runs each of its queries with a snapshot of its own, taken
when that query begins; so these two functions take the lock and then look, in one statement:

- ``workloom_idempotency_enter``: a keyed call's own, which waits for the lock and returns the stored
  answer, if any (two round trips before: the lock, then the look).
- ``workloom_idempotency_free``: the condition of a hand-off's ``INSERT … SELECT`` of a waiting claimer's
  answer, in the statement that writes it. It must not wait: where the lock is taken or an answer is
  stored already it raises SQLSTATE ``WLK01``, which undoes the statement, and the engine runs the create
  again without that hand-off. Before, the lock and the look were a statement of their own, which needed a
  transaction around a create that is otherwise one statement sent without BEGIN (five round trips, with
  the number's reservation, against two).

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

FUNCTIONS = ("workloom_idempotency_enter(text, text)", "workloom_idempotency_free(text, text)")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION workloom_idempotency_enter(p_workspace_id text, p_key_hash text)
        RETURNS TABLE (request_hash text, status_code integer, response bytea)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended(p_workspace_id || ':' || p_key_hash, 0));
            -- A query of its own, so a snapshot taken now that the lock is held.
            RETURN QUERY
                SELECT k.request_hash::text, k.status_code, k.response
                FROM idempotency_keys AS k
                WHERE k.workspace_id = p_workspace_id AND k.key_hash = p_key_hash;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION workloom_idempotency_free(p_workspace_id text, p_key_hash text)
        RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF NOT pg_try_advisory_xact_lock(hashtextextended(p_workspace_id || ':' || p_key_hash, 0)) THEN
                RAISE EXCEPTION 'the idempotency key is in use' USING ERRCODE = 'WLK01';
            END IF;
            -- A query of its own (not one expression with the lock's), so a snapshot taken now that the
            -- lock is held: it sees an answer the lock's last holder committed.
            IF EXISTS (
                SELECT 1 FROM idempotency_keys AS k
                WHERE k.workspace_id = p_workspace_id AND k.key_hash = p_key_hash
            ) THEN
                RAISE EXCEPTION 'the idempotency key is answered already' USING ERRCODE = 'WLK01';
            END IF;
            RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
