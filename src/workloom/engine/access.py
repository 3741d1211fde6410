"""Workspaces, API keys and authentication. Keys are shown once and stored only as hashes."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.actors import Actor
from workloom.domain.clock import Clock
from workloom.domain.errors import NotFound, Unauthorized, ValidationFailed
from workloom.domain.ids import new_id
from workloom.domain.models import DEFAULT_WORKSPACE, ApiKey, Workspace
from workloom.domain.roles import ROLES
from workloom.domain.secrets import hash_secret, new_secret
from workloom.engine.principal import Principal
from workloom.store import workspaces as store
from workloom.store.database import Database

ACTOR_KIND_BY_ROLE = {"admin": "human", "member": "human", "agent": "agent_session"}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    secret: str
    workspace: Workspace


# A key's lookup is remembered this long, sparing every request a database round trip.
KEY_CACHE_SECONDS = 10.0
KEY_CACHE_SIZE = 10_000


class Access:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._known: dict[str, tuple[float, ApiKey, str]] = {}

    async def authenticate(self, secret: str, origin_kind: str = "http") -> Principal:
        if not secret:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        key_hash = hash_secret(secret)
        cached = self._known.get(key_hash)
        if cached is not None and cached[0] > time.monotonic():
            found: tuple[ApiKey, str] | None = (cached[1], cached[2])
        else:
            found = await self.db.reading(lambda conn: store.key_get_by_hash(conn, key_hash))
            if found is not None:
                if len(self._known) >= KEY_CACHE_SIZE:
                    self._known.clear()
                self._known[key_hash] = (time.monotonic() + KEY_CACHE_SECONDS, found[0], found[1])
        if found is None or not hmac.compare_digest(key_hash, found[1]):  # the hash found by, in constant time
            raise Unauthorized("the API key is not valid; create one with 'workloom keys create'")
        key = found[0]
        actor = Actor(ACTOR_KIND_BY_ROLE[key.role], key.name or key.id)
        return Principal(
            workspace_id=key.workspace_id, role=key.role, actor=actor, origin=Actor(origin_kind, key.id), key_id=key.id
        )

    async def create_key(
        self, workspace_name: str, role: str, name: str | None = None, secret: str | None = None
    ) -> IssuedKey:
        """Create a key (and its workspace if new). ``secret`` lets an operator choose the key itself."""
        if role not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
        secret = secret or new_secret("wl")
        now = self.clock.now()
        async with self.db.transaction() as conn:
            workspace = await store.workspace_get_by_name(conn, workspace_name)
            if workspace is None:
                workspace = await store.workspace_insert(conn, id=new_id("ws"), name=workspace_name, now=now)
            key_id = new_id("key")
            key = await store.key_insert(
                conn,
                id=key_id,
                workspace_id=workspace.id,
                role=role,
                name=name or f"{role}-{key_id[-6:]}",
                prefix=secret[:10],
                key_hash=hash_secret(secret),
                now=now,
            )
        return IssuedKey(key=key, secret=secret, workspace=workspace)

    async def bootstrap(self, token: str | None) -> IssuedKey | None:
        """At start: with a token, make sure it is an admin key of ``default``; without one, create an
        admin key on the very first start only. Returns a newly created key, to be printed once."""

        async def issued_before(conn: AsyncConnection) -> bool:
            if token:
                return await store.key_get_by_hash(conn, hash_secret(token)) is not None
            return await store.key_count(conn) > 0

        if await self.db.reading(issued_before):
            return None
        return await self.create_key(DEFAULT_WORKSPACE, "admin", name="bootstrap", secret=token)

    async def workspaces(self) -> list[Workspace]:
        return await self.db.reading(store.workspace_list)

    async def workspace(self, principal: Principal) -> Workspace:
        """The caller's own workspace (its name, for vocabularies that filter by it)."""
        found = await self.db.reading(lambda conn: store.workspace_get(conn, principal.workspace_id))
        if found is None:
            raise NotFound(f"workspace {principal.workspace_id} not found")
        return found

    async def keys(self, workspace_id: str) -> list[ApiKey]:
        return await self.db.reading(lambda conn: store.key_list(conn, workspace_id))
