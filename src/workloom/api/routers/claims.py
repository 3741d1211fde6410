"""/v1/claims/next: claim the best run across the workspace's queues (or the named ones), long-polling."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import abandoned, engine, idempotency, json, principal
from workloom.api.lean import LeanRoute
from workloom.api.schemas.runs import ClaimNext
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey

router = APIRouter(prefix="/v1/claims", tags=["runs"], route_class=LeanRoute)


@router.post("/next")
async def claim_next(
    request: Request,
    body: ClaimNext,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.claim_next(
        p,
        body.worker.to_actor(),
        queues=body.queues,
        lease_seconds=body.lease_seconds,
        start=body.start,
        wait_seconds=float(body.wait_seconds),
        idempotency=idem,
        give_up=abandoned(request),
        render=lambda claim: (200, {"claim": render.claim(claim) if claim else None}),
    )
    return json(data, status)
