"""Who does something: every event records an actor ``{kind, ref}`` and an origin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ActorKind = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]
OriginKind = Literal["cli", "web", "uds", "http", "automation", "extension", "network", "agent_session", "daemon"]
ACTOR_KINDS: tuple[str, ...] = get_args(ActorKind)
ORIGIN_KINDS: tuple[str, ...] = get_args(OriginKind)


@dataclass(frozen=True, slots=True)
class Actor:
    kind: str
    ref: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref}


SYSTEM = Actor("automation", "workloom")
TICKER = Actor("automation", "workloom.ticker")
