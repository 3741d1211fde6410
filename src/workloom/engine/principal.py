"""Who is calling: the workspace and role an API key grants, and the actor recorded in events."""

from __future__ import annotations

from dataclasses import dataclass

from workloom.domain.actors import Actor
from workloom.domain.errors import Forbidden
from workloom.domain.roles import Permission, allows


@dataclass(frozen=True, slots=True)
class Principal:
    workspace_id: str
    role: str
    actor: Actor
    origin: Actor
    key_id: str | None = None

    def require(self, permission: Permission) -> None:
        if not allows(self.role, permission):
            raise Forbidden(f"a key with role {self.role!r} may not do this ({permission} is needed)")
