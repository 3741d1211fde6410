"""a keyed hand-off's lock and look inside the statement that writes its answer

Revision ID: 0007
Revises: 0006

A task handed to a claimer waiting under an idempotency key stores the claimer's answer under the key, in
the creating transaction, only where it may without waiting: the key's lock free and no answer stored under
it. Taken and looked at in a statement of their own (``workloom_idempotency_enter``, 0006), they needed a
transaction around the create, which otherwise is one statement sent without BEGIN: BEGIN, the look, the
statement and COMMIT, five round trips with the number's reservation against two. This function takes and
looks in the writing statement itself, as the condition of the answer's ``INSERT … SELECT``: a query of its
own, so with a snapshot taken once the lock is held; refusing (SQLSTATE ``WLK01``) rather than waiting, which
undoes the statement and lets the engine run the create again without that hand-off.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FUNCTION = "workloom_idempotency_free(text, text)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
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
    op.execute(f"DROP FUNCTION {FUNCTION}")
