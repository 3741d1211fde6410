"""A task's runs (/api/tasks/{id}/runs) and one run's operations (/api/task-runs/{id}/…).

Run operations other than claim and cancel act as the run's holder: an agent key only on runs it
claimed, a person's key on any held run (the engine checks; see ``runs._held``). No claim token is
ever asked for or handed out; ``claim_token_hash`` is shown instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from workloom.api.deps import idempotency
from workloom.dialects.agh import bodies, shapes
from workloom.dialects.agh.deps import engine, json, keyed, principal
from workloom.dialects.agh.query import bounded
from workloom.dialects.agh.vocab import RUN_STATUS_FROM_AGH, AghRunStatus
from workloom.domain import usage
from workloom.domain.models import Claim, Run, Task
from workloom.engine import runs, tasks
from workloom.engine.principal import Principal
from workloom.engine.service import Workloom
from workloom.engine.unit import IdempotencyKey, Unit

task_runs = APIRouter(prefix="/api/tasks/{task_id}/runs", tags=["runs"])
router = APIRouter(prefix="/api/task-runs", tags=["runs"])


def run_answer(status: int = 200) -> Callable[[Run], tuple[int, dict[str, Any]]]:
    def render(run: Run) -> tuple[int, dict[str, Any]]:
        return status, {"run": shapes.run_full(run)}

    return render


def claimed_run(claim: Claim) -> tuple[int, dict[str, Any]]:
    return 200, {"run": shapes.run_full(claim.run)}


@task_runs.get("")
async def list_runs(
    task_id: str,
    status: AghRunStatus | None = None,
    session_id: str | None = Query(None, max_length=200),
    limit: int | None = Query(None, ge=1),
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
) -> Response:
    canonical = RUN_STATUS_FROM_AGH[status] if status is not None else None
    wanted = await wl.run(p, lambda u: runs.list_for_task(u, task_id, status=canonical, session_id=session_id))
    return json({"runs": [shapes.run_full(r) for r in wanted[: bounded(limit)]]})


@task_runs.post("")
async def enqueue(
    request: Request,
    task_id: str,
    body: bodies.Enqueue | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    header: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    idem = await keyed(request, body.idempotency_key if body else None, header)
    status, data = await wl.respond(p, lambda u: runs.enqueue(u, task_id), run_answer(201), idem)
    return json(data, status)


@router.get("/{run_id}")
async def get_run(run_id: str, p: Principal = Depends(principal), wl: Workloom = Depends(engine)) -> Response:
    async def read(u: Unit) -> tuple[Run, Task]:
        run = await runs.get(u, run_id)
        return run, await tasks.get(u, run.task_id)

    run, task = await wl.run(p, read)
    events = [e for e in await wl.events.timeline(p, task.id, 0, RUN_EVENTS) if e.run_id == run.id]
    last = events[-1] if events else None
    summary = shapes.usage_summary(
        usage.summarize([run.usage]), last.created_at if last else None, last.type if last else None
    )
    return json(
        {
            "run": {
                "run": shapes.run_full(run),
                "session": shapes.session(run),
                "summary": summary,
                "task": shapes.task_ref(task),
            }
        }
    )


# The run detail's last activity is read from this many of its task's events.
RUN_EVENTS = 5000


@router.post("/{run_id}/attach-session")
async def attach_session(
    run_id: str,
    body: bodies.AttachSession,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(p, lambda u: runs.attach_session(u, run_id, body.session_id), run_answer(), idem)
    return json(data, status)


@router.post("/{run_id}/cancel")
async def cancel_run(
    run_id: str,
    body: bodies.Reasoned | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    reason = body.reason if body else None
    status, data = await wl.respond(p, lambda u: runs.cancel_run(u, run_id, reason), run_answer(), idem)
    return json(data, status)


@router.post("/{run_id}/claim")
async def claim_run(
    request: Request,
    run_id: str,
    body: bodies.RunClaim | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    header: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    body = body or bodies.RunClaim()
    idem = await keyed(request, body.idempotency_key, header)
    lease = body.lease_seconds
    status, data = await wl.respond(p, lambda u: runs.claim_run(u, run_id, p.actor, lease), claimed_run, idem)
    return json(data, status)


@router.post("/{run_id}/start")
async def start_run(
    request: Request,
    run_id: str,
    body: bodies.RunStart | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    header: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    idem = await keyed(request, body.idempotency_key if body else None, header)
    status, data = await wl.respond(p, lambda u: runs.start(u, run_id, None), run_answer(), idem)
    return json(data, status)


@router.post("/{run_id}/complete")
async def complete_run(
    run_id: str,
    body: bodies.RunComplete | None = None,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    body = body or bodies.RunComplete()
    result, reported = body.result, body.usage
    status, data = await wl.respond(p, lambda u: runs.complete(u, run_id, None, result, reported), run_answer(), idem)
    return json(data, status)


@router.post("/{run_id}/fail")
async def fail_run(
    run_id: str,
    body: bodies.RunFail,
    p: Principal = Depends(principal),
    wl: Workloom = Depends(engine),
    idem: IdempotencyKey | None = Depends(idempotency),
) -> Response:
    status, data = await wl.respond(
        p, lambda u: runs.fail(u, run_id, None, body.error, body.retryable), run_answer(), idem
    )
    return json(data, status)
