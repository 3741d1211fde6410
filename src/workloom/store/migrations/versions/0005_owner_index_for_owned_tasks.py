"""owner index for owned tasks only

Revision ID: 0005
Revises: 0004

``ix_tasks_workspace_owner`` serves the lists filtered by owner ("my work", ``?owner=``), which always ask
for one owner; most tasks a worker runs have none. An update of a task that is not a HOT update writes
an entry to every index that covers the row, so a claim and a completion each wrote one here for an
unowned task. As a partial index on owned tasks it keeps serving those lists (an equality on
``owner_ref`` implies it is not NULL, which both PostgreSQL and SQLite use to pick a partial index) and
costs an unowned task nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OWNED = "owner_ref IS NOT NULL"
COLUMNS = ["workspace_id", "owner_kind", "owner_ref", "status", "id"]


def upgrade() -> None:
    op.drop_index("ix_tasks_workspace_owner", table_name="tasks")
    op.create_index(
        "ix_tasks_workspace_owner", "tasks", COLUMNS, postgresql_where=sa.text(OWNED), sqlite_where=sa.text(OWNED)
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_workspace_owner", table_name="tasks")
    op.create_index("ix_tasks_workspace_owner", "tasks", COLUMNS)
