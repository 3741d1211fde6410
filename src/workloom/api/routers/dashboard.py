"""/v1/dashboard: the observer dashboard, cheap enough to poll every few seconds."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import engine, json, principal
from workloom.api.lean import LeanRoute
from workloom.domain.dashboard import DashboardFilters, DashboardSettings
from workloom.engine import dashboard
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom

router = APIRouter(tags=["dashboard"], route_class=LeanRoute)

ActorKind = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]
OriginKind = Literal["cli", "web", "uds", "http", "automation", "extension", "network", "agent_session", "daemon"]
DEFAULTS = DashboardSettings()


@router.get("/v1/dashboard")
async def observe(
    scope: Literal["global", "workspace"] | None = Query(None),
    owner_kind: ActorKind | None = Query(None),
    owner_ref: str | None = Query(None, min_length=1, max_length=200),
    queue: str | None = Query(None, min_length=1, max_length=200),
    origin_kind: OriginKind | None = Query(None),
    backlog_threshold_seconds: float = Query(DEFAULTS.backlog_threshold_seconds, ge=0, le=7 * 86_400),
    stale_after_seconds: float = Query(DEFAULTS.stale_after_seconds, ge=0, le=7 * 86_400),
    stuck_after_seconds: float = Query(DEFAULTS.stuck_after_seconds, ge=0, le=7 * 86_400),
    active_limit: int = Query(DEFAULTS.active_limit, ge=0, le=200),
    latency_samples: int = Query(DEFAULTS.latency_samples, ge=0, le=1000),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    filters = DashboardFilters(scope, owner_kind, owner_ref, queue, origin_kind)
    settings = DashboardSettings(
        backlog_threshold_seconds, stale_after_seconds, stuck_after_seconds, active_limit, latency_samples
    )
    return json(render.dashboard(await wl.run(p, lambda u: dashboard.observe(u, filters, settings))))
