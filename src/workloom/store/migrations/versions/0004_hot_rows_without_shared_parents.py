"""hot rows without shared parents: tasks and runs lose their workspace and queue foreign keys (PostgreSQL)

Revision ID: 0004
Revises: 0003

Every task created, and every run, checked its workspace and its queue: a trigger per row that reads the
parent and takes a share lock on it. All the writers of a workspace share those two rows, so under
concurrency each lock becomes a multixact PostgreSQL must create and later clean up. Measured here with
the checks off: a batch create +20-28 %, one-at-a-time creates +9-12 %, a worker's claim-and-complete
loop +8-16 % (PostgreSQL CPU per task 1.35 -> 1.15 ms). What the checks guarded cannot happen: neither a
workspace nor a queue is ever deleted, tasks and runs are written by the engine alone, for the unit's
workspace and a queue it has just found or made. Should either become deletable, the engine must refuse
while tasks refer to it (as the event log, which lost its check in 0003, already relies on).

The run's task keeps its key (a deleted task takes its runs with it), as does a task's parent.

SQLite keeps the four constraints: it drops one by rebuilding the table, and rebuilding ``tasks`` with
foreign keys on would cascade into every run; its checks take no shared row locks either.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, constraint, column, parent table) — the names the initial schema gave them.
DROPPED = [
    ("tasks", "fk_tasks_workspace_id_workspaces", "workspace_id", "workspaces"),
    ("tasks", "fk_tasks_queue_id_queues", "queue_id", "queues"),
    ("runs", "fk_runs_workspace_id_workspaces", "workspace_id", "workspaces"),
    ("runs", "fk_runs_queue_id_queues", "queue_id", "queues"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, _, _ in DROPPED:
        op.drop_constraint(name, table, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, column, parent in DROPPED:
        op.create_foreign_key(name, table, parent, [column], ["id"])
