"""/v1/queues: create, list, read, update, and claim runs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import abandoned, engine, idempotency, json, principal
from workloom.api.lean import LeanRoute
from workloom.api.schemas.queues import ClaimRequest, QueueCreate, QueueFields
from workloom.engine import queues
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey

router = APIRouter(prefix="/v1/queues", tags=["queues"], route_class=LeanRoute)
QueueName = Path(min_length=1, max_length=200)


@router.post("", status_code=201)
async def create_queue(
    body: QueueCreate,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(
        p, lambda u: queues.create(u, body.name, body.settings()), lambda q: (201, render.queue(q)), idem
    )
    return json(data, status)


@router.get("")
async def list_queues(p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    found = await wl.run(p, queues.list_all)
    return json(render.items([render.queue(q) for q in found]))


@router.get("/{name}")
async def get_queue(
    name: str = QueueName, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.queue(await wl.run(p, lambda u: queues.get(u, name))))


@router.patch("/{name}")
async def update_queue(
    body: QueueFields, name: str = QueueName, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    return json(render.queue(await wl.run(p, lambda u: queues.update(u, name, body.settings()))))


@router.post("/{name}/claim")
async def claim(
    request: Request,
    body: ClaimRequest,
    name: str = QueueName,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.claim(
        p,
        name,
        body.worker.to_actor(),
        limit=body.limit,
        lease_seconds=body.lease_seconds,
        start=body.start,
        wait_seconds=float(body.wait_seconds),
        idempotency=idem,
        give_up=abandoned(request),
        render=lambda claims: (200, {"claims": [render.claim(c) for c in claims]}),
    )
    return json(data, status)
