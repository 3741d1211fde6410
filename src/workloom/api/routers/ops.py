"""Health, readiness and metrics: unauthenticated, for load balancers and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from workloom.api.deps import engine, json
from workloom.api.lean import LeanRoute
from workloom.engine.service import Workloom

router = APIRouter(tags=["operations"], route_class=LeanRoute)


@router.get("/healthz")
async def healthz() -> Response:
    return json({"status": "ok"})


@router.get("/readyz")
async def readyz(wl: Workloom = Depends(engine)) -> Response:
    ok, detail = await wl.ready()
    return json({"status": "ok" if ok else "unavailable", "detail": detail}, 200 if ok else 503)


@router.get("/metrics")
async def metrics(wl: Workloom = Depends(engine)) -> Response:
    return Response(await wl.metrics.render(wl.db, wl.clock), media_type=CONTENT_TYPE_LATEST)
