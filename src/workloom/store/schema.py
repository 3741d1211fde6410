"""The canonical schema. Migrations in ``migrations/versions`` must replay to exactly this."""

from __future__ import annotations

import sqlalchemy as sa

from workloom.store.types import BigId, JsonValue, UtcDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ACTIVE_RUN = "status IN ('queued', 'claimed', 'starting', 'running')"
HELD_RUN = "status IN ('claimed', 'starting', 'running')"


def inline(value: str) -> sa.BindParameter[str]:
    """A constant written into the SQL text rather than sent as a parameter: PostgreSQL can then match
    the predicate to a partial index (``WHERE status = 'queued'``) even in a cached generic plan."""
    return sa.literal(value, literal_execute=True)


def inline_all(values: tuple[str, ...]) -> list[sa.BindParameter[str]]:
    return [inline(v) for v in values]


workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("task_counter", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
    sa.CheckConstraint("role IN ('admin', 'member', 'agent')", name="role"),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("lease_seconds", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("initial_interval_seconds", sa.Float, nullable=False),
    sa.Column("backoff_coefficient", sa.Float, nullable=False),
    sa.Column("max_interval_seconds", sa.Float, nullable=False),
    sa.Column("start_mode", sa.String(20), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("workspace_id", "name"),
    sa.CheckConstraint("start_mode IN ('auto', 'manual')", name="start_mode"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), nullable=False),  # no foreign key: see migration 0004
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("queue_id", sa.String(40)),
    sa.Column("data", JsonValue),
    sa.Column("output", JsonValue),
    sa.Column("error", sa.Text),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("blocked_reason", sa.String(20)),
    sa.Column("draft", sa.Boolean, nullable=False),
    sa.Column("approval_policy", sa.String(20), nullable=False),
    sa.Column("approval_state", sa.String(20), nullable=False),
    sa.Column("parent_task_id", sa.String(40), sa.ForeignKey("tasks.id")),
    sa.Column("max_attempts", sa.Integer),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("start_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("due_at", UtcDateTime),
    sa.Column("overdue_at", UtcDateTime),
    sa.Column("owner_kind", sa.String(20)),
    sa.Column("owner_ref", sa.String(200)),
    sa.Column("created_by_kind", sa.String(20), nullable=False),
    sa.Column("created_by_ref", sa.String(200), nullable=False),
    sa.Column("origin_kind", sa.String(20), nullable=False),
    sa.Column("origin_ref", sa.String(200), nullable=False),
    sa.Column("metadata", JsonValue),
    sa.Column("event_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime),
    sa.Column("last_activity_at", UtcDateTime, nullable=False),
    sa.Column(
        "scope",
        sa.String(20),
        sa.CheckConstraint("scope IN ('global', 'workspace')", name="scope"),
        nullable=False,
        server_default="workspace",
    ),
    sa.UniqueConstraint("workspace_id", "number"),
    sa.CheckConstraint(
        "status IN ('draft', 'blocked', 'scheduled', 'ready', 'in_progress', 'on_hold', "
        "'completed', 'failed', 'skipped', 'canceled')",
        name="status",
    ),
    sa.CheckConstraint(
        "(closed_at IS NOT NULL) = (status IN ('completed', 'failed', 'skipped', 'canceled'))",
        name="closed_at_iff_final",
    ),
    sa.CheckConstraint("(blocked_reason IS NOT NULL) = (status = 'blocked')", name="blocked_reason_iff_blocked"),
    sa.CheckConstraint("priority BETWEEN 0 AND 3", name="priority"),
    sa.Index("ix_tasks_workspace_created", "workspace_id", "created_at"),
    # Only tasks that have a parent: a root task's updates write no entry here.
    sa.Index(
        "ix_tasks_parent",
        "parent_task_id",
        postgresql_where=sa.text("parent_task_id IS NOT NULL"),
        sqlite_where=sa.text("parent_task_id IS NOT NULL"),
    ),
    sa.Index("ix_tasks_queue_status", "queue_id", "status"),
    # The dashboard's grouped counts read only this index.
    sa.Index("ix_tasks_workspace_status_reason", "workspace_id", "status", "blocked_reason", "approval_state"),
    sa.Index("ix_tasks_workspace_activity", "workspace_id", "last_activity_at"),
    # Lists by owner always name one; an unowned task's updates write nothing here (migration 0005).
    sa.Index(
        "ix_tasks_workspace_owner",
        "workspace_id",
        "owner_kind",
        "owner_ref",
        "status",
        "id",
        postgresql_where=sa.text("owner_ref IS NOT NULL"),
        sqlite_where=sa.text("owner_ref IS NOT NULL"),
    ),
    sa.Index(
        "ix_tasks_approval_pending",
        "workspace_id",
        postgresql_where=sa.text("approval_state = 'pending'"),
        sqlite_where=sa.text("approval_state = 'pending'"),
    ),
    sa.Index(
        "ix_tasks_due",
        "due_at",
        postgresql_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
        sqlite_where=sa.text("due_at IS NOT NULL AND overdue_at IS NULL"),
    ),
)

task_dependencies = sa.Table(
    "task_dependencies",
    metadata,
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("depends_on_task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False, server_default="blocks"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_task_dependencies_depends_on", "depends_on_task_id"),
    sa.CheckConstraint("task_id <> depends_on_task_id", name="not_self"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), nullable=False),  # no foreign key: see migration 0004
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("queue_id", sa.String(40), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("available_at", UtcDateTime, nullable=False),
    sa.Column("queued_at", UtcDateTime, nullable=False),
    sa.Column("claimed_at", UtcDateTime),
    sa.Column("started_at", UtcDateTime),
    sa.Column("ended_at", UtcDateTime),
    sa.Column("heartbeat_at", UtcDateTime),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("claim_token_hash", sa.String(64)),
    sa.Column("claimed_by_kind", sa.String(20)),
    sa.Column("claimed_by_ref", sa.String(200)),
    sa.Column("end_reason", sa.String(40)),
    sa.Column("error", sa.Text),
    sa.Column("result", JsonValue),
    sa.Column("progress", JsonValue),
    sa.Column("usage", JsonValue),
    sa.Column("metadata", JsonValue),
    sa.Column("session_id", sa.String(200)),
    sa.Column("origin_kind", sa.String(20)),
    sa.Column("origin_ref", sa.String(200)),
    sa.Column("idempotency_key", sa.String(255)),
    sa.CheckConstraint(
        "status IN ('queued', 'claimed', 'starting', 'running', 'completed', 'failed', 'canceled')", name="status"
    ),
    sa.CheckConstraint(f"(ended_at IS NOT NULL) = NOT ({ACTIVE_RUN})", name="ended_at_iff_final"),
    sa.CheckConstraint(
        f"(lease_until IS NOT NULL AND claim_token_hash IS NOT NULL) OR NOT ({HELD_RUN})", name="held_has_lease"
    ),
    # At most one active run per task: the database itself refuses a double claim or double enqueue.
    sa.Index(
        "ux_runs_one_active_per_task",
        "task_id",
        unique=True,
        postgresql_where=sa.text(ACTIVE_RUN),
        sqlite_where=sa.text(ACTIVE_RUN),
    ),
    sa.Index(
        "ix_runs_claimable",
        "workspace_id",
        "queue_id",
        sa.text("priority DESC"),
        "available_at",
        "id",
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    ),
    # claim-next across every queue of a workspace: the best run whatever its queue.
    sa.Index(
        "ix_runs_claimable_any",
        "workspace_id",
        sa.text("priority DESC"),
        "available_at",
        "id",
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    ),
    sa.Index("ix_runs_lease", "lease_until", postgresql_where=sa.text(HELD_RUN), sqlite_where=sa.text(HELD_RUN)),
    sa.Index("ix_runs_task", "task_id", "attempt"),
    # The dashboard: grouped counts, and the most recent claims for latency.
    sa.Index("ix_runs_workspace_status_reason", "workspace_id", "status", "end_reason"),
    sa.Index(
        "ix_runs_workspace_claimed",
        "workspace_id",
        "claimed_at",
        postgresql_where=sa.text("claimed_at IS NOT NULL"),
        sqlite_where=sa.text("claimed_at IS NOT NULL"),
    ),
)

# One person's triage of one task (see domain/triage.py). Not history: no events are written for it.
task_triage = sa.Table(
    "task_triage",
    metadata,
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("actor_kind", sa.String(20), primary_key=True),
    sa.Column("actor_ref", sa.String(200), primary_key=True),
    sa.Column("read_at", UtcDateTime),
    sa.Column("dismissed_at", UtcDateTime),
    sa.Column("archived_at", UtcDateTime),
    sa.Column("last_seen_activity_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_task_triage_actor", "workspace_id", "actor_kind", "actor_ref"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("sequence", BigId, primary_key=True, autoincrement=True),
    # No foreign keys: the log is append-only and written by the engine alone, and a check per row would
    # share-lock the workspace row on every write (migration 0003); history outlives a deleted task.
    sa.Column("workspace_id", sa.String(40), nullable=False),
    sa.Column("task_id", sa.String(40)),
    sa.Column("run_id", sa.String(40)),
    sa.Column("task_sequence", sa.BigInteger),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Column("actor_kind", sa.String(20), nullable=False),
    sa.Column("actor_ref", sa.String(200), nullable=False),
    sa.Column("origin_kind", sa.String(20)),
    sa.Column("origin_ref", sa.String(200)),
    sa.Column("payload", JsonValue, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # No longer written or read (streams now wait on the transactions a read saw in flight: see
    # engine.events._Horizon). Kept while servers of the earlier release, which write it, may still run
    # beside this one during an upgrade; a later migration drops it.
    sa.Column("commit_horizon", sa.BigInteger),
    sa.Index("ix_events_workspace_sequence", "workspace_id", "sequence"),
    sa.Index("ix_events_task_sequence", "task_id", "task_sequence"),
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE")),
    sa.Column("run_id", sa.String(40)),
    sa.Column("fire_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_timers_fire_at", "fire_at"),
    sa.Index("ix_timers_task", "task_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer),
    # The first answer, encrypted with a key derived from the idempotency key itself: a claim's
    # token is in it, and only the client that holds the idempotency key can read it back.
    sa.Column("response", sa.LargeBinary),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_idempotency_keys_created", "created_at"),
)
