"""Request bodies as AGH clients send them.

Known fields are typed strictly (a wrong type is a 400); fields the dialect does not know are ignored,
so a client built against a newer AGH keeps working. An absent body counts as ``{}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from workloom.dialects.agh.vocab import AghApprovalPolicy, AghOwnerKind, AghPriority, AghScope

Title = Annotated[StrictStr, Field(min_length=1, max_length=500)]
Text = Annotated[StrictStr, Field(max_length=20_000)]
Short = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Channel = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Reason = Annotated[StrictStr, Field(max_length=2_000)]
Ref = Annotated[StrictStr, Field(min_length=1, max_length=60)]
Key = Annotated[StrictStr, Field(min_length=1, max_length=255)]
Attempts = Annotated[StrictInt, Field(ge=1, le=1000)]
LeaseSeconds = Annotated[StrictInt, Field(ge=1, le=24 * 3600)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Owner(Body):
    kind: AghOwnerKind
    ref: Short


class TaskCreate(Body):
    title: Title
    scope: AghScope | None = None
    description: Text | None = None
    priority: AghPriority = "medium"
    owner: Owner | None = None
    network_channel: Channel | None = None
    parent_task_id: Ref | None = None
    draft: StrictBool = False
    approval_policy: AghApprovalPolicy = "none"
    max_attempts: Attempts | None = None
    metadata: dict[str, Any] | None = None
    depends_on: Annotated[list[Ref], Field(max_length=100)] = []


class TaskPatch(Body):
    title: Title | None = None
    description: Text | None = None
    priority: AghPriority | None = None
    owner: Owner | None = None
    network_channel: Channel | None = None
    scope: AghScope | None = None
    approval_policy: AghApprovalPolicy | None = None
    max_attempts: Attempts | None = None
    metadata: dict[str, Any] | None = None


class DependencyAdd(Body):
    depends_on_task_id: Ref


class Reasoned(Body):
    reason: Reason | None = None


class Approve(Body):
    comment: Reason | None = None


class Enqueue(Body):
    idempotency_key: Key | None = None


class RunClaim(Body):
    idempotency_key: Key | None = None
    lease_seconds: LeaseSeconds | None = None


class RunStart(Body):
    idempotency_key: Key | None = None


class RunComplete(Body):
    result: Any = None
    usage: dict[str, Any] | None = None


class RunFail(Body):
    error: Annotated[StrictStr, Field(min_length=1, max_length=20_000)]
    retryable: StrictBool = True


class AttachSession(Body):
    session_id: Short


class ClaimNext(Body):
    network_channel: Channel | None = None
    lease_seconds: LeaseSeconds | None = None
    wait_seconds: Annotated[StrictInt | StrictFloat, Field(ge=0, le=30)] = 0
    idempotency_key: Key | None = None


class Heartbeat(Body):
    lease_seconds: LeaseSeconds | None = None
    usage: dict[str, Any] | None = None
