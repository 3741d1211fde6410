"""/v1/runs: the lease holder's calls (each needs the claim token handed out by the claim), claiming one
particular run, attaching an agent session, and canceling one run."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from workloom.api import render
from workloom.api.deps import abandoned, engine, idempotency, json, principal
from workloom.api.lean import LeanRoute
from workloom.api.problems import problem_fields
from workloom.api.schemas.runs import (
    AttachSession,
    CancelRun,
    ClaimAfter,
    ClaimRun,
    Complete,
    CompleteBatch,
    Fail,
    Heartbeat,
    HeartbeatBatch,
    Release,
    StartBatch,
    TokenBody,
)
from workloom.domain.actors import Actor
from workloom.domain.errors import WorkloomError
from workloom.domain.models import Claim, Run
from workloom.engine import runs
from workloom.engine.principal import Principal
from workloom.engine.service import ThenWait, Workloom
from workloom.engine.unit import IdempotencyKey

router = APIRouter(prefix="/v1/runs", tags=["runs"], route_class=LeanRoute)


def _ok(run: Run) -> tuple[int, dict[str, object]]:
    return 200, render.run(run)


@router.post("/complete")
async def complete_runs(
    request: Request,
    body: CompleteBatch,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    """Complete up to 1000 held runs in one transaction, each on its own: an item is either
    ``{"run_id", "status": "completed"}`` or ``{"run_id", "error": <problem>}``. With ``claim_next``
    (queue, worker, limit) the same transaction then claims what that queue has claimable now, as ``claims``."""
    items = [(item.run_id, item.claim_token, item.result) for item in body.runs]
    rendered = _outcomes([item.run_id for item in body.runs])

    after = body.claim_next
    if after is None:
        status, data = await wl.respond(p, runs.CompleteMany(items), rendered, idem, shared=True, items=len(items))
        return json(data, status)

    def rendered_claiming(done: tuple[list[Run | WorkloomError], list[Claim]]) -> tuple[int, dict[str, object]]:
        status, data = rendered(done[0])
        return status, {**data, "claims": [render.claim(c) for c in done[1]]}

    worker = after.worker.to_actor()
    status, data = await wl.respond_claiming(
        p,
        lambda u: runs.complete_many_and_claim(
            u, items, after.queue, worker, after.limit, after.lease_seconds, after.start
        ),
        rendered_claiming,
        idem,
        shared=True,
        items=len(items) + after.limit,
        then=_then_wait(request, after, at=(after.queue, worker)),
    )
    return json(data, status)


@router.post("/start")
async def start_runs(
    body: StartBatch,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    """Start (mark running) up to 1000 held runs in one transaction, each on its own: an item is either
    ``{"run_id", "status": "running"}`` or ``{"run_id", "error": <problem>}``; a run already running is
    given back as it is."""
    items = [(item.run_id, item.claim_token) for item in body.runs]
    rendered = _outcomes([item.run_id for item in body.runs])
    status, data = await wl.respond(p, runs.StartMany(items), rendered, idem, shared=True, items=len(items))
    return json(data, status)


def _outcomes(
    run_ids: list[str], *, leases: bool = False
) -> Callable[[list[Run | WorkloomError]], tuple[int, dict[str, object]]]:
    """A batch's answer: per item, the run's status (and with ``leases`` its ``lease_until``) or the problem
    that refused it."""

    def rendered(outcomes: list[Run | WorkloomError]) -> tuple[int, dict[str, object]]:
        out: list[dict[str, object]] = []
        for run_id, outcome in zip(run_ids, outcomes, strict=True):
            if isinstance(outcome, WorkloomError):
                out.append({"run_id": run_id, "error": problem_fields(outcome)[1]})
            elif leases:
                out.append(
                    {"run_id": run_id, "status": outcome.status, "lease_until": render.when(outcome.lease_until)}
                )
            else:
                out.append({"run_id": run_id, "status": outcome.status})
        return 200, {"items": out}

    return rendered


@router.post("/{run_id}/complete")
async def complete_run(
    request: Request,
    run_id: str,
    body: Complete,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    after = body.claim_next
    completion = runs.Completion(
        run_id,
        body.claim_token,
        body.result,
        body.usage,
        claim_next=after.limit if after else 0,
        lease_seconds=after.lease_seconds if after else None,
        start=after.start if after else False,
    )
    if after is None:
        status, data = await wl.respond(p, completion, _completed, idem, shared=True)
    else:
        then = _then_wait(request, after, run_id=run_id)
        status, data = await wl.respond_claiming(p, completion, _completed_and_claimed, idem, shared=True, then=then)
    return json(data, status)


def _then_wait(
    request: Request, after: ClaimAfter, *, at: tuple[str, Actor] | None = None, run_id: str | None = None
) -> ThenWait:
    """A completion's ``claim_next`` with ``wait_seconds``: a long-poll when it claimed nothing, whose claims
    are added to the completion's answer."""
    return ThenWait(
        seconds=float(after.wait_seconds),
        limit=after.limit,
        lease_seconds=after.lease_seconds,
        start=after.start,
        at=at,
        run_id=run_id,
        claimed=lambda rendered: bool(rendered[1]["claims"]),
        adding=lambda rendered, claims: (rendered[0], {**rendered[1], "claims": [render.claim(c) for c in claims]}),
        give_up=abandoned(request),
    )


def _completed(done: tuple[Run, list[Claim]]) -> tuple[int, dict[str, object]]:
    return 200, render.run(done[0])


def _completed_and_claimed(done: tuple[Run, list[Claim]]) -> tuple[int, dict[str, object]]:
    """With ``claim_next``: the completed run and the runs claimed after it."""
    return 200, {"run": render.run(done[0]), "claims": [render.claim(c) for c in done[1]]}


@router.post("/heartbeat")
async def heartbeat_runs(
    body: HeartbeatBatch, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    """Heartbeat up to 1000 held runs in one transaction, each on its own (as ``/{run_id}/heartbeat``): an
    item is ``{"run_id", "status", "lease_until"}`` or ``{"run_id", "error": <problem>}``. A worker renews
    all its leases in one request."""
    beats = [
        runs.Beat(item.run_id, item.claim_token, item.extend_seconds, item.progress, item.usage) for item in body.runs
    ]
    outcomes = await wl.run(p, runs.HeartbeatMany(beats), shared=True, items=len(beats))
    _, data = _outcomes([item.run_id for item in body.runs], leases=True)(outcomes)
    return json(data)


@router.post("/{run_id}/heartbeat")
async def heartbeat(
    run_id: str, body: Heartbeat, p: Principal = Depends(principal), wl: Workloom = Depends(engine)
) -> Response:
    run = await wl.run(
        p,
        lambda u: runs.heartbeat(u, run_id, body.claim_token, body.extend_seconds, body.progress, body.usage),
        shared=True,
    )
    return json(render.run(run))


@router.get("/{run_id}")
async def get_run(run_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    return json(render.run(await wl.run(p, lambda u: runs.get(u, run_id))))


@router.post("/{run_id}/start")
async def start_run(
    run_id: str,
    body: TokenBody,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: runs.start(u, run_id, body.claim_token), _ok, idem, shared=True)
    return json(data, status)


@router.post("/{run_id}/fail")
async def fail_run(
    run_id: str,
    body: Fail,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(
        p, lambda u: runs.fail(u, run_id, body.claim_token, body.error, body.retryable), _ok, idem, shared=True
    )
    return json(data, status)


@router.post("/{run_id}/release")
async def release_run(
    run_id: str,
    body: Release,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: runs.release(u, run_id, body.claim_token, body.reason), _ok, idem)
    return json(data, status)


@router.post("/{run_id}/claim")
async def claim_run(
    run_id: str,
    body: ClaimRun,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    def rendered(claim: Claim) -> tuple[int, dict[str, object]]:
        return 200, render.claim(claim)

    status, data = await wl.respond(
        p,
        lambda u: runs.claim_run(u, run_id, body.worker.to_actor(), body.lease_seconds, start=body.start),
        rendered,
        idem,
    )
    return json(data, status)


@router.post("/{run_id}/attach-session")
async def attach_session(
    run_id: str,
    body: AttachSession,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(
        p, lambda u: runs.attach_session(u, run_id, body.session_id, body.claim_token), _ok, idem
    )
    return json(data, status)


@router.post("/{run_id}/cancel")
async def cancel_run(
    run_id: str,
    body: CancelRun | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None
    status, data = await wl.respond(p, lambda u: runs.cancel_run(u, run_id, reason), _ok, idem)
    return json(data, status)
