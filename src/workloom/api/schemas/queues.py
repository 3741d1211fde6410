"""Request bodies of the queue endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from workloom.api.schemas.common import ActorIn, Name, Number, Strict, StrictBool, StrictInt, Text
from workloom.engine.queues import QueueSettings

LeaseSeconds = Annotated[StrictInt, Field(ge=1, le=86_400)]
Attempts = Annotated[StrictInt, Field(ge=1, le=1000)]
Interval = Annotated[Number, Field(ge=0, le=86_400)]
Coefficient = Annotated[Number, Field(ge=1, le=100)]


class QueueFields(Strict):
    description: Text | None = None
    lease_seconds: LeaseSeconds | None = None
    max_attempts: Attempts | None = None
    initial_interval_seconds: Interval | None = None
    backoff_coefficient: Coefficient | None = None
    max_interval_seconds: Interval | None = None
    start_mode: Literal["auto", "manual"] | None = None

    def settings(self) -> QueueSettings:
        return QueueSettings(
            description=self.description,
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            initial_interval_seconds=_float(self.initial_interval_seconds),
            backoff_coefficient=_float(self.backoff_coefficient),
            max_interval_seconds=_float(self.max_interval_seconds),
            start_mode=self.start_mode,
        )


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


class QueueCreate(QueueFields):
    name: Name


class ClaimRequest(Strict):
    worker: ActorIn
    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    lease_seconds: LeaseSeconds | None = None
    wait_seconds: Annotated[Number, Field(ge=0, le=30)] = 0
    start: StrictBool = False  # the runs claimed go straight to running, as a start right after would leave them
