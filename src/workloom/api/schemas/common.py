"""Shared request pieces: strict types so a wrong-typed field is refused rather than coerced."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from workloom.domain.actors import Actor

ActorKindIn = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]
PriorityIn = Literal["low", "medium", "high", "urgent"]
Name = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Text = Annotated[StrictStr, Field(max_length=20_000)]
Reason = Annotated[StrictStr, Field(max_length=2_000)]
Number = StrictInt | StrictFloat


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone, e.g. 2030-01-01T09:00:00Z")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActorIn(Strict):
    kind: ActorKindIn
    ref: Annotated[StrictStr, Field(min_length=1, max_length=200)]

    def to_actor(self) -> Actor:
        return Actor(self.kind, self.ref)


JsonObject = dict[str, Any]
__all__ = [
    "ActorIn",
    "AwareDatetime",
    "JsonObject",
    "Name",
    "Number",
    "PriorityIn",
    "Reason",
    "Strict",
    "StrictBool",
    "StrictInt",
    "StrictStr",
    "Text",
]
