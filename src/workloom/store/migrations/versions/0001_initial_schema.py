"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import workloom.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task_counter", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
        sa.UniqueConstraint("name", name=op.f("uq_workspaces_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'member', 'agent')", name=op.f("ck_api_keys_role")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_api_keys_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "events",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("task_sequence", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_ref", sa.String(length=200), nullable=False),
        sa.Column("origin_kind", sa.String(length=20), nullable=True),
        sa.Column("origin_ref", sa.String(length=200), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("commit_horizon", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_events_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_task_sequence", ["task_id", "task_sequence"], unique=False)
        batch_op.create_index("ix_events_workspace_sequence", ["workspace_id", "sequence"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_idempotency_keys_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("workspace_id", "key_hash", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_created", ["created_at"], unique=False)

    op.create_table(
        "queues",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("initial_interval_seconds", sa.Float(), nullable=False),
        sa.Column("backoff_coefficient", sa.Float(), nullable=False),
        sa.Column("max_interval_seconds", sa.Float(), nullable=False),
        sa.Column("start_mode", sa.String(length=20), nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("start_mode IN ('auto', 'manual')", name=op.f("ck_queues_start_mode")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_queues_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queues")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_queues_workspace_id_name")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("queue_id", sa.String(length=40), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "output",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("blocked_reason", sa.String(length=20), nullable=True),
        sa.Column("draft", sa.Boolean(), nullable=False),
        sa.Column("approval_policy", sa.String(length=20), nullable=False),
        sa.Column("approval_state", sa.String(length=20), nullable=False),
        sa.Column("parent_task_id", sa.String(length=40), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("due_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("overdue_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("owner_kind", sa.String(length=20), nullable=True),
        sa.Column("owner_ref", sa.String(length=200), nullable=True),
        sa.Column("created_by_kind", sa.String(length=20), nullable=False),
        sa.Column("created_by_ref", sa.String(length=200), nullable=False),
        sa.Column("origin_kind", sa.String(length=20), nullable=False),
        sa.Column("origin_ref", sa.String(length=200), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("event_sequence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_activity_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(blocked_reason IS NOT NULL) = (status = 'blocked')",
            name=op.f("ck_tasks_blocked_reason_iff_blocked"),
        ),
        sa.CheckConstraint(
            "(closed_at IS NOT NULL) = (status IN ('completed', 'failed', 'skipped', 'canceled'))",
            name=op.f("ck_tasks_closed_at_iff_final"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'blocked', 'scheduled', 'ready', 'in_progress', 'on_hold', 'completed', 'failed', 'skipped', 'canceled')",
            name=op.f("ck_tasks_status"),
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 3", name=op.f("ck_tasks_priority")),
        sa.ForeignKeyConstraint(["parent_task_id"], ["tasks.id"], name=op.f("fk_tasks_parent_task_id_tasks")),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], name=op.f("fk_tasks_queue_id_queues")),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_tasks_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("workspace_id", "number", name=op.f("uq_tasks_workspace_id_number")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_due",
            ["due_at"],
            unique=False,
            postgresql_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
            sqlite_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
        )
        batch_op.create_index("ix_tasks_parent", ["parent_task_id"], unique=False)
        batch_op.create_index("ix_tasks_queue_status", ["queue_id", "status"], unique=False)
        batch_op.create_index("ix_tasks_workspace_created", ["workspace_id", "created_at"], unique=False)
        batch_op.create_index("ix_tasks_workspace_status", ["workspace_id", "status"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("queue_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("available_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("queued_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("started_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", workloom.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("claim_token_hash", sa.String(length=64), nullable=True),
        sa.Column("claimed_by_kind", sa.String(length=20), nullable=True),
        sa.Column("claimed_by_ref", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.String(length=40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "progress",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "usage",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.CheckConstraint(
            "(ended_at IS NOT NULL) = NOT (status IN ('queued', 'claimed', 'starting', 'running'))",
            name=op.f("ck_runs_ended_at_iff_final"),
        ),
        sa.CheckConstraint(
            "(lease_until IS NOT NULL AND claim_token_hash IS NOT NULL) OR NOT (status IN ('claimed', 'starting', 'running'))",
            name=op.f("ck_runs_held_has_lease"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'claimed', 'starting', 'running', 'completed', 'failed', 'canceled')",
            name=op.f("ck_runs_status"),
        ),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], name=op.f("fk_runs_queue_id_queues")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_runs_task_id_tasks"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_runs_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_claimable",
            ["workspace_id", "queue_id", sa.text("priority DESC"), "available_at", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )
        batch_op.create_index(
            "ix_runs_lease",
            ["lease_until"],
            unique=False,
            postgresql_where=sa.text("status IN ('claimed', 'starting', 'running')"),
            sqlite_where=sa.text("status IN ('claimed', 'starting', 'running')"),
        )
        batch_op.create_index("ix_runs_task", ["task_id", "attempt"], unique=False)
        batch_op.create_index(
            "ux_runs_one_active_per_task",
            ["task_id"],
            unique=True,
            postgresql_where=sa.text("status IN ('queued', 'claimed', 'starting', 'running')"),
            sqlite_where=sa.text("status IN ('queued', 'claimed', 'starting', 'running')"),
        )

    op.create_table(
        "task_dependencies",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("depends_on_task_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), server_default="blocks", nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("task_id <> depends_on_task_id", name=op.f("ck_task_dependencies_not_self")),
        sa.ForeignKeyConstraint(
            ["depends_on_task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_depends_on_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_dependencies_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_task_dependencies_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("task_id", "depends_on_task_id", name=op.f("pk_task_dependencies")),
    )
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.create_index("ix_task_dependencies_depends_on", ["depends_on_task_id"], unique=False)

    op.create_table(
        "timers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("fire_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", workloom.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_timers_task_id_tasks"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_timers_workspace_id_workspaces")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timers")),
    )
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.create_index("ix_timers_fire_at", ["fire_at"], unique=False)
        batch_op.create_index("ix_timers_task", ["task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index("ix_timers_task")
        batch_op.drop_index("ix_timers_fire_at")

    op.drop_table("timers")
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.drop_index("ix_task_dependencies_depends_on")

    op.drop_table("task_dependencies")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_runs_one_active_per_task",
            postgresql_where=sa.text("status IN ('queued', 'claimed', 'starting', 'running')"),
            sqlite_where=sa.text("status IN ('queued', 'claimed', 'starting', 'running')"),
        )
        batch_op.drop_index("ix_runs_task")
        batch_op.drop_index("ix_runs_claimable")
        batch_op.drop_index(
            "ix_runs_lease",
            postgresql_where=sa.text("status IN ('claimed', 'starting', 'running')"),
            sqlite_where=sa.text("status IN ('claimed', 'starting', 'running')"),
        )

    op.drop_table("runs")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_workspace_status")
        batch_op.drop_index("ix_tasks_workspace_created")
        batch_op.drop_index("ix_tasks_queue_status")
        batch_op.drop_index("ix_tasks_parent")
        batch_op.drop_index(
            "ix_tasks_due",
            postgresql_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
            sqlite_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
        )

    op.drop_table("tasks")
    op.drop_table("queues")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_created")

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_workspace_sequence")
        batch_op.drop_index("ix_events_task_sequence")

    op.drop_table("events")
    op.drop_table("api_keys")
    op.drop_table("workspaces")
