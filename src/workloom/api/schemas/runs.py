"""Request bodies of the run endpoints: every one carries the claim token that proves the lease."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from workloom.api.schemas.common import Reason, Strict, StrictBool, StrictInt, StrictStr

Token = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class TokenBody(Strict):
    claim_token: Token


class Heartbeat(TokenBody):
    extend_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] | None = None
    progress: Any = None
    usage: dict[str, Any] | None = None


class Complete(TokenBody):
    result: Any = None
    usage: dict[str, Any] | None = None


class Fail(TokenBody):
    error: Annotated[StrictStr, Field(min_length=1, max_length=20_000)]
    retryable: StrictBool = True


class Release(TokenBody):
    reason: Reason | None = None
