"""/api/agent/tasks: the calling agent's own work — claim the next run, then heartbeat, complete, fail or
release it. The agent is known by its API key; each call acts only on a run that agent holds (another
agent gets 409), and answers with the run's lease."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from workloom.api.deps import abandoned, idempotency
from workloom.dialects.agh import bodies, shapes
from workloom.dialects.agh.deps import empty, engine, json, keyed, principal
from workloom.domain.models import Claim, Run
from workloom.engine import runs
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey

router = APIRouter(prefix="/api/agent/tasks", tags=["agent"])

# Nothing to claim: the document's second answer of claim-next is an empty one.
NOTHING_CLAIMED = 204


def claim_answer(claim: Claim | None) -> tuple[int, Any]:
    return (200, {"claim": shapes.claim(claim)}) if claim else (NOTHING_CLAIMED, None)


def lease_answer(run: Run) -> tuple[int, dict[str, Any]]:
    return 200, {"lease": shapes.lease(run)}


@router.post("/claim-next")
async def claim_next(
    request: Request,
    body: bodies.ClaimNext | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    header: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    body = body or bodies.ClaimNext()
    status, data = await wl.claim_next(
        p,
        p.actor,
        queues=[body.network_channel] if body.network_channel else None,
        lease_seconds=body.lease_seconds,
        wait_seconds=float(body.wait_seconds),
        render=claim_answer,
        idempotency=await keyed(request, body.idempotency_key, header),
        give_up=abandoned(request),
    )
    return empty(status) if data is None else json(data, status)


@router.post("/{run_id}/heartbeat")
async def heartbeat(
    run_id: str,
    body: bodies.Heartbeat | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    body = body or bodies.Heartbeat()
    lease, reported = body.lease_seconds, body.usage
    run = await wl.run(p, lambda u: runs.heartbeat(u, run_id, None, lease, usage=reported))
    return json(lease_answer(run)[1])


@router.post("/{run_id}/complete")
async def complete(
    run_id: str,
    body: bodies.RunComplete | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    body = body or bodies.RunComplete()
    result, reported = body.result, body.usage
    status, data = await wl.respond(p, lambda u: runs.complete(u, run_id, None, result, reported), lease_answer, idem)
    return json(data, status)


@router.post("/{run_id}/fail")
async def fail(
    run_id: str,
    body: bodies.RunFail,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(
        p, lambda u: runs.fail(u, run_id, None, body.error, body.retryable), lease_answer, idem
    )
    return json(data, status)


@router.post("/{run_id}/release")
async def release(
    run_id: str,
    body: bodies.Reasoned | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None
    status, data = await wl.respond(p, lambda u: runs.release(u, run_id, None, reason), lease_answer, idem)
    return json(data, status)
