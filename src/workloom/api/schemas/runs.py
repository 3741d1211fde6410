"""Request bodies of the run endpoints: every one carries the claim token that proves the lease."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from workloom.api.schemas.common import ActorIn, Number, Reason, Strict, StrictBool, StrictInt, StrictStr

Token = Annotated[StrictStr, Field(min_length=1, max_length=200)]
LeaseSeconds = Annotated[StrictInt, Field(ge=1, le=86_400)]
QueueName = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class TokenBody(Strict):
    claim_token: Token


class Heartbeat(TokenBody):
    extend_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] | None = None
    progress: Any = None
    usage: dict[str, Any] | None = None


class ClaimAfter(Strict):
    """Claim more runs in the completion's own transaction: what is claimable now; with ``wait_seconds``,
    when there is none, wait up to that long for one (a long-poll, as a claim's)."""

    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    lease_seconds: LeaseSeconds | None = None
    wait_seconds: Annotated[Number, Field(ge=0, le=30)] = 0
    start: StrictBool = False  # the runs claimed go straight to running, as a start right after would leave them


class Complete(TokenBody):
    result: Any = None
    usage: dict[str, Any] | None = None
    claim_next: ClaimAfter | None = None  # from the run's queue, for the worker that held it


class CompleteItem(TokenBody):
    run_id: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    result: Any = None


class HeartbeatItem(Heartbeat):
    run_id: Annotated[StrictStr, Field(min_length=1, max_length=100)]


class HeartbeatBatch(Strict):
    runs: Annotated[list[HeartbeatItem], Field(min_length=1, max_length=1000)]


class StartItem(TokenBody):
    run_id: Annotated[StrictStr, Field(min_length=1, max_length=100)]


class StartBatch(Strict):
    runs: Annotated[list[StartItem], Field(min_length=1, max_length=1000)]


class ClaimAfterBatch(ClaimAfter):
    queue: QueueName
    worker: ActorIn


class CompleteBatch(Strict):
    runs: Annotated[list[CompleteItem], Field(min_length=1, max_length=1000)]
    claim_next: ClaimAfterBatch | None = None


class Fail(TokenBody):
    error: Annotated[StrictStr, Field(min_length=1, max_length=20_000)]
    retryable: StrictBool = True


class Release(TokenBody):
    reason: Reason | None = None


class AttachSession(Strict):
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    claim_token: Token | None = None


class ClaimRun(Strict):
    worker: ActorIn
    lease_seconds: LeaseSeconds | None = None
    start: StrictBool = False  # the runs claimed go straight to running, as a start right after would leave them


class CancelRun(Strict):
    reason: Reason | None = None


class ClaimNext(Strict):
    worker: ActorIn
    queues: Annotated[list[QueueName], Field(min_length=1, max_length=100)] | None = None
    lease_seconds: LeaseSeconds | None = None
    wait_seconds: Annotated[Number, Field(ge=0, le=30)] = 0
    start: StrictBool = False  # the runs claimed go straight to running, as a start right after would leave them
