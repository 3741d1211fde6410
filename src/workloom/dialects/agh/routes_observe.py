"""The observer: the task dashboard, the caller's inbox, and triage marks on inbox items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from workloom.dialects.agh import observe_shapes
from workloom.dialects.agh.deps import check_workspace, engine, json, principal
from workloom.dialects.agh.query import bounded
from workloom.dialects.agh.reads import gather
from workloom.dialects.agh.vocab import AghLane, AghOriginKind, AghOwnerKind, AghScope
from workloom.domain.dashboard import DashboardFilters
from workloom.domain.triage import InboxFilters, TriageAction
from workloom.engine import dashboard, triage
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import Unit

router = APIRouter(prefix="/api/observe/tasks", tags=["observe"])
triage_router = APIRouter(prefix="/api/tasks/{task_id}/triage", tags=["observe"])

INBOX_LIMIT = 50


@router.get("/dashboard")
async def get_dashboard(
    scope: AghScope | None = None,
    workspace: str | None = Query(None, max_length=200),
    owner_kind: AghOwnerKind | None = None,
    owner_ref: str | None = Query(None, max_length=200),
    network_channel: str | None = Query(None, max_length=200),
    origin_kind: AghOriginKind | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    await check_workspace(wl, p, workspace)
    filters = DashboardFilters(
        scope=scope, owner_kind=owner_kind, owner_ref=owner_ref, queue=network_channel, origin_kind=origin_kind
    )
    found = await wl.run(p, lambda u: dashboard.observe(u, filters))
    return json({"dashboard": observe_shapes.dashboard(found)})


@router.get("/inbox")
async def get_inbox(
    scope: AghScope | None = None,
    workspace: str | None = Query(None, max_length=200),
    owner_kind: AghOwnerKind | None = None,
    owner_ref: str | None = Query(None, max_length=200),
    lane: AghLane | None = None,
    unread: bool | None = None,
    query: str | None = Query(None, max_length=200),
    limit: int | None = Query(None, ge=1),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    await check_workspace(wl, p, workspace)
    filters = InboxFilters(
        lane=lane,
        unread=unread,
        owner_kind=owner_kind,
        owner_ref=owner_ref,
        search=(query.strip() or None) if query else None,
        scope=scope,
        limit=bounded(limit, INBOX_LIMIT),
    )

    async def read(u: Unit) -> dict[str, Any]:
        found = await triage.inbox(u, filters)
        facts = await gather(u, [item.task for item in found.items], edges=False)
        return observe_shapes.inbox(found, facts)

    return json({"inbox": await wl.run(p, read)})


async def _mark(wl: Workloom, p: Principal, task_id: str, action: TriageAction) -> Response:
    state = await wl.run(p, lambda u: triage.mark(u, task_id, action))
    return json({"triage": observe_shapes.triage(state)})


@triage_router.post("/read")
async def mark_read(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return await _mark(wl, p, task_id, "read")


@triage_router.post("/dismiss")
async def dismiss(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return await _mark(wl, p, task_id, "dismiss")


@triage_router.post("/archive")
async def archive(task_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return await _mark(wl, p, task_id, "archive")
