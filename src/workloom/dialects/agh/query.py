"""AGH's query parameters turned into the engine's filters.

Filters map one to one onto task fields (``network_channel`` is the queue, ``query`` the title or
identifier search); an AGH status stands for the canonical statuses ``vocab`` maps onto it. Drafts are
left out of listings unless ``include_drafts=true`` or a ``status`` filter names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from workloom.dialects.agh.vocab import CANONICAL_TASK_STATUSES
from workloom.domain.queries import Filter, ListQuery, SortKey

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
NEWEST_FIRST = [SortKey("created_at", descending=True)]


def bounded(limit: int | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """AGH's ``limit`` (at least 1, validated by the route): ``default`` when absent, capped at ``maximum``."""
    return min(limit or default, maximum)


@dataclass(frozen=True, slots=True)
class TaskFilters:
    scope: str | None = None
    status: str | None = None
    priority: str | None = None
    include_drafts: bool = False
    approval_state: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    parent_task_id: str | None = None
    network_channel: str | None = None
    query: str | None = None
    limit: int | None = None

    def list_query(self) -> ListQuery:
        filters = [
            Filter(name, "eq", value)
            for name, value in (
                ("scope", self.scope),
                ("priority", self.priority),
                ("approval_state", self.approval_state),
                ("owner_kind", self.owner_kind),
                ("owner_ref", self.owner_ref),
                ("parent_task_id", self.parent_task_id),
                ("queue", self.network_channel),
            )
            if value is not None
        ]
        if self.status is not None:
            filters.append(Filter("status", "in", list(CANONICAL_TASK_STATUSES[self.status])))
        elif not self.include_drafts:
            filters.append(Filter("draft", "eq", False))
        return ListQuery(
            filters=filters,
            sort=list(NEWEST_FIRST),
            limit=bounded(self.limit),
            search=(self.query.strip()[:200] or None) if self.query else None,
        )
