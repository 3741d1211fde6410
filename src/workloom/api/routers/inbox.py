"""/v1/inbox and per-person triage: the caller's lanes, and marking a task read, dismissed or archived."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import engine, json, principal
from workloom.api.lean import LeanRoute
from workloom.domain.triage import InboxFilters, Lane, TriageAction
from workloom.engine import triage
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom

router = APIRouter(tags=["inbox"], route_class=LeanRoute)

ActorKind = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]


@router.get("/v1/inbox")
async def inbox(
    lane: Lane | None = Query(None),
    unread: bool | None = Query(None),
    owner_kind: ActorKind | None = Query(None),
    owner_ref: str | None = Query(None, min_length=1, max_length=200),
    q: str | None = Query(None, max_length=200),
    scope: Literal["global", "workspace"] | None = Query(None),
    queue: str | None = Query(None, min_length=1, max_length=200),
    limit: int = Query(50, ge=1, le=triage.MAX_LIMIT),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    filters = InboxFilters(
        lane=lane,
        unread=unread,
        owner_kind=owner_kind,
        owner_ref=owner_ref,
        search=q or None,
        scope=scope,
        queue=queue,
        limit=limit,
    )
    return json(render.inbox(await wl.run(p, lambda u: triage.inbox(u, filters))))


@router.get("/v1/tasks/{task_id}/triage")
async def get_triage(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json(render.triage(await wl.run(p, lambda u: triage.get(u, task_id))))


@router.post("/v1/tasks/{task_id}/triage/{action}")
async def mark(
    task_id: str, action: TriageAction, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.triage(await wl.run(p, lambda u: triage.mark(u, task_id, action))))
