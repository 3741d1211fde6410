"""task scope, run sessions/origin/idempotency key, per-person triage, dashboard and claim-next indexes

Revision ID: 0002
Revises: 0001

Only additions: new columns (with defaults), a new table and new indexes, so SQLite needs no table
rebuild (a rebuild of ``tasks`` with foreign keys on would cascade-delete its runs).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import workloom.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column(
            "scope",
            sa.String(length=20),
            sa.CheckConstraint("scope IN ('global', 'workspace')", name=op.f("ck_tasks_scope")),
            server_default="workspace",
            nullable=False,
        ),
    )
    op.add_column("runs", sa.Column("session_id", sa.String(length=200), nullable=True))
    op.add_column("runs", sa.Column("origin_kind", sa.String(length=20), nullable=True))
    op.add_column("runs", sa.Column("origin_ref", sa.String(length=200), nullable=True))
    op.add_column("runs", sa.Column("idempotency_key", sa.String(length=255), nullable=True))

    op.create_index(
        "ix_tasks_workspace_status_reason",
        "tasks",
        ["workspace_id", "status", "blocked_reason", "approval_state"],
        unique=False,
    )
    op.create_index("ix_tasks_workspace_activity", "tasks", ["workspace_id", "last_activity_at"], unique=False)
    op.create_index(
        "ix_tasks_workspace_owner", "tasks", ["workspace_id", "owner_kind", "owner_ref", "status", "id"], unique=False
    )
    op.create_index(
        "ix_tasks_approval_pending",
        "tasks",
        ["workspace_id"],
        unique=False,
        postgresql_where=sa.text("approval_state = 'pending'"),
        sqlite_where=sa.text("approval_state = 'pending'"),
    )
    op.create_index(
        "ix_runs_claimable_any",
        "runs",
        ["workspace_id", sa.text("priority DESC"), "available_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_runs_workspace_status_reason", "runs", ["workspace_id", "status", "end_reason"], unique=False)
    op.create_index(
        "ix_runs_workspace_claimed",
        "runs",
        ["workspace_id", "claimed_at"],
        unique=False,
        postgresql_where=sa.text("claimed_at IS NOT NULL"),
        sqlite_where=sa.text("claimed_at IS NOT NULL"),
    )

    op.create_table(
        "task_triage",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_ref", sa.String(length=200), nullable=False),
        sa.Column("read_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("dismissed_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("archived_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_seen_activity_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_triage_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_task_triage_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("task_id", "actor_kind", "actor_ref", name=op.f("pk_task_triage")),
    )
    op.create_index("ix_task_triage_actor", "task_triage", ["workspace_id", "actor_kind", "actor_ref"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_task_triage_actor", table_name="task_triage")
    op.drop_table("task_triage")
    op.drop_index("ix_runs_workspace_claimed", table_name="runs")
    op.drop_index("ix_runs_workspace_status_reason", table_name="runs")
    op.drop_index("ix_runs_claimable_any", table_name="runs")
    op.drop_index("ix_tasks_approval_pending", table_name="tasks")
    op.drop_index("ix_tasks_workspace_owner", table_name="tasks")
    op.drop_index("ix_tasks_workspace_activity", table_name="tasks")
    op.drop_index("ix_tasks_workspace_status_reason", table_name="tasks")
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch rebuild of ``tasks`` would cascade-delete runs.
    for column in ("idempotency_key", "origin_ref", "origin_kind", "session_id"):
        op.drop_column("runs", column)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_tasks_scope"), "tasks", type_="check")
    op.drop_column("tasks", "scope")
