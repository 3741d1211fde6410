"""Request bodies of the task endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from workloom.api.schemas.common import (
    ActorIn,
    AwareDatetime,
    JsonObject,
    Name,
    PriorityIn,
    Reason,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Text,
)
from workloom.engine.tasks import NewTask

Title = Annotated[StrictStr, Field(min_length=1, max_length=500)]
TaskRef = Annotated[StrictStr, Field(min_length=1, max_length=60)]
Attempts = Annotated[StrictInt, Field(ge=1, le=1000)]


class TaskCreate(Strict):
    title: Title
    description: Text | None = None
    queue: Name | None = None
    data: Any = None
    priority: PriorityIn = "medium"
    max_attempts: Attempts | None = None
    draft: StrictBool = False
    parent_task_id: TaskRef | None = None
    # A factory, not ``[]``: pydantic deep-copies a mutable default for every task of a batch.
    depends_on: Annotated[list[TaskRef], Field(max_length=100, default_factory=list)]
    approval_policy: Literal["none", "required"] = "none"
    due_at: AwareDatetime | None = None
    owner: ActorIn | None = None
    metadata: JsonObject | None = None
    scope: Literal["global", "workspace"] = "workspace"

    def to_new(self, parent_task_id: str | None = None) -> NewTask:
        return NewTask(
            title=self.title.strip(),
            description=self.description,
            queue=self.queue,
            data=self.data,
            priority=self.priority,
            max_attempts=self.max_attempts,
            draft=self.draft,
            parent_task_id=parent_task_id or self.parent_task_id,
            depends_on=list(self.depends_on),
            approval_policy=self.approval_policy,
            due_at=self.due_at,
            owner=self.owner.to_actor() if self.owner else None,
            metadata=self.metadata,
            scope=self.scope,
        )


class TaskBatch(Strict):
    tasks: Annotated[list[TaskCreate], Field(min_length=1, max_length=1000)]


class TaskPatch(Strict):
    title: Title | None = None
    description: Text | None = None
    priority: PriorityIn | None = None
    data: Any = None
    metadata: JsonObject | None = None
    due_at: AwareDatetime | None = None
    owner: ActorIn | None = None
    max_attempts: Attempts | None = None
    queue: Name | None = None
    approval_policy: Literal["none", "required"] | None = None
    scope: Literal["global", "workspace"] | None = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the request named; ``null`` clears the nullable ones."""
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name in ("title", "priority", "approval_policy", "scope") and value is None:
                continue
            out[name] = value.to_actor() if isinstance(value, ActorIn) else value
        return out


class Comment(Strict):
    comment: Reason | None = None


class ReasonBody(Strict):
    reason: Reason | None = None


class DependenciesAdd(Strict):
    depends_on: Annotated[list[TaskRef], Field(min_length=1, max_length=100)]
