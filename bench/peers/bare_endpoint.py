"""A bare FastAPI + asyncpg claim/complete service: what Workloom's ``single`` scenario is measured against.

    BARE_DATABASE_URL=postgresql://… uvicorn bench.peers.bare_endpoint:app --port 8765

Same shape as Workloom's worker calls: ``POST /claim`` takes the oldest queued job (one
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``, returning it and a fresh claim token) and
``POST /jobs/{id}/complete`` with ``{"claim_token"}`` completes it if the token matches; with
``"claim_next": true`` the same transaction then claims the next job (one request per job, as Workloom's
``claim_next``). No auth, no events, no validation beyond the body model. The bench creates and fills
``bare_jobs`` itself.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    claim_token text,
    payload jsonb,
    result jsonb,
    claimed_at timestamptz,
    done_at timestamptz
);
CREATE INDEX IF NOT EXISTS bare_jobs_queued ON bare_jobs (id) WHERE status = 'queued';
"""

CLAIM = """
UPDATE bare_jobs SET status = 'claimed', claim_token = $1, claimed_at = now()
 WHERE id = (SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
 RETURNING id, payload
"""
COMPLETE = """
UPDATE bare_jobs SET status = 'done', result = $3, done_at = now()
 WHERE id = $1 AND claim_token = $2 AND status = 'claimed'
"""

pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["BARE_DATABASE_URL"], min_size=4, max_size=20)
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


class Completion(BaseModel):
    claim_token: str
    result: Any = None
    claim_next: bool = False


@app.post("/claim")
async def claim() -> dict[str, Any]:
    assert pool is not None
    token = secrets.token_urlsafe(16)
    row = await pool.fetchrow(CLAIM, token)
    if row is None:
        return {"job": None}
    return {"job": {"id": row["id"], "payload": row["payload"]}, "claim_token": token}


@app.post("/jobs/{job_id}/complete")
async def complete(job_id: int, body: Completion) -> dict[str, Any]:
    assert pool is not None
    if not body.claim_next:
        status = await pool.execute(COMPLETE, job_id, body.claim_token, None)
        if status != "UPDATE 1":
            raise HTTPException(409, "stale claim")
        return {"id": job_id, "status": "done"}
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(COMPLETE, job_id, body.claim_token, None)
        if status != "UPDATE 1":
            raise HTTPException(409, "stale claim")
        token = secrets.token_urlsafe(16)
        row = await conn.fetchrow(CLAIM, token)
    nxt = {"job": {"id": row["id"], "payload": row["payload"]}, "claim_token": token} if row else {"job": None}
    return {"id": job_id, "status": "done", "next": nxt}


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}
