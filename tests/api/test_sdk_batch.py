"""The SDK's batch calls: ``create_tasks`` and ``complete_runs``, sync and async."""

from __future__ import annotations

import pytest
from serverproc import ServerProcess

from workloom.client import AsyncClient, Client, StaleClaimError, ValidationError

WORKER = {"kind": "automation", "ref": "sdk-batch"}


def test_create_tasks_and_complete_runs(server: ServerProcess) -> None:
    with Client(server.url, server.token) as wl:
        made = wl.create_tasks(["plain", {"title": "rich", "queue": "sb", "priority": "high", "data": {"n": 1}}])
        assert [t.title for t in made] == ["plain", "rich"]
        assert made[1].status == "ready" and made[1].queue == "sb" and made[1].data == {"n": 1}
        more = wl.create_tasks([{"title": f"t{i}", "queue": "sb"} for i in range(3)])
        claims = wl.claim("sb", worker=WORKER, limit=10)
        assert len(claims) == 4
        outcomes = wl.complete_runs(
            [(c.run.id, c.claim_token, {"i": i}) for i, c in enumerate(claims[:3])] + [(claims[3].run.id, "clm_bad")]
        )
        assert [o.ok for o in outcomes] == [True, True, True, False]
        assert outcomes[0].status == "completed"
        assert isinstance(outcomes[3].exception, StaleClaimError)
        assert wl.get_task(claims[0].task.id).output == {"i": 0}
        assert {t.id for t in more} <= {c.task.id for c in claims}
        with pytest.raises(ValidationError) as invalid:
            wl.create_tasks([{"title": "ok"}, {"title": "bad", "priority": "extreme"}])
        assert any(e.field.startswith("tasks.1.priority") for e in invalid.value.errors)


async def test_async_create_tasks_and_complete_runs(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token) as wl:
        made = await wl.create_tasks([{"title": f"a{i}", "queue": "asb"} for i in range(5)])
        assert len(made) == 5
        claims = await wl.claim("asb", worker=WORKER, limit=5)
        outcomes = await wl.complete_runs([(c.run.id, c.claim_token) for c in claims])
        assert all(o.ok for o in outcomes) and len(outcomes) == 5
        again = await wl.complete_runs([(claims[0].run.id, claims[0].claim_token)])
        assert isinstance(again[0].exception, StaleClaimError)


def test_complete_and_claim_keeps_a_worker_busy_in_one_call_per_task(server: ServerProcess) -> None:
    with Client(server.url, server.token, worker=WORKER) as wl:
        wl.create_tasks([{"title": f"c{i}", "queue": "scc"} for i in range(3)])
        (claim,) = wl.claim("scc")
        done: list[str] = []
        while claim is not None:
            run, nxt = wl.complete_and_claim(claim.run.id, claim.claim_token, result={"t": claim.task.title})
            assert run.status == "completed"
            done.append(claim.task.title)
            claim = nxt[0] if nxt else None
        assert sorted(done) == ["c0", "c1", "c2"]
        assert {t.status for t in wl.list_tasks(queue="scc").items} == {"completed"}


async def test_async_complete_runs_and_claim(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token, worker=WORKER) as wl:
        await wl.create_tasks([{"title": f"b{i}", "queue": "acc"} for i in range(4)])
        claims = await wl.claim("acc", limit=2)
        outcomes, nxt = await wl.complete_runs_and_claim([(c.run.id, c.claim_token) for c in claims], "acc", limit=5)
        assert all(o.ok for o in outcomes)
        assert len(nxt) == 2 and all(c.run.claimed_by.ref == WORKER["ref"] for c in nxt)


def test_start_runs_each_on_its_own(server: ServerProcess) -> None:
    with Client(server.url, server.token, worker=WORKER) as wl:
        wl.create_tasks([{"title": f"st{i}", "queue": "sst"} for i in range(2)])
        claims = wl.claim("sst", limit=2)
        outcomes = wl.start_runs([(claims[0].run.id, claims[0].claim_token), (claims[1].run.id, "clm_bad")])
        assert [(o.ok, o.status) for o in outcomes] == [(True, "running"), (False, None)]
        assert isinstance(outcomes[1].exception, StaleClaimError)
        assert [wl.get_run(c.run.id).status for c in claims] == ["running", "claimed"]


def test_heartbeat_runs_each_on_its_own(server: ServerProcess) -> None:
    with Client(server.url, server.token, worker=WORKER) as wl:
        wl.create_tasks([{"title": f"hb{i}", "queue": "shb"} for i in range(2)])
        claims = wl.claim("shb", limit=2, lease_seconds=60)
        outcomes = wl.heartbeat_runs(
            [
                {"run_id": claims[0].run.id, "claim_token": claims[0].claim_token, "progress": {"pct": 50},
                 "extend_seconds": 600},
                (claims[1].run.id, "clm_bad"),
            ]
        )  # fmt: skip
        assert [o.ok for o in outcomes] == [True, False]
        assert isinstance(outcomes[1].exception, StaleClaimError)
        run = wl.get_run(claims[0].run.id)
        assert run.progress == {"pct": 50} and run.lease_until == outcomes[0].lease_until
        assert outcomes[0].lease_until is not None and outcomes[0].lease_until > claims[0].lease_until


async def test_async_start_and_heartbeat_runs(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token, worker=WORKER) as wl:
        await wl.create_tasks([{"title": f"ahb{i}", "queue": "ashb"} for i in range(3)])
        claims = await wl.claim("ashb", limit=3)
        beaten = await wl.heartbeat_runs([(c.run.id, c.claim_token) for c in claims])
        assert [o.status for o in beaten] == ["claimed"] * 3
        assert all(o.lease_until is not None for o in beaten)
        started = await wl.start_runs([(c.run.id, c.claim_token) for c in claims])
        assert [o.status for o in started] == ["running"] * 3


def test_claims_that_start_sync_and_async(server: ServerProcess) -> None:
    with Client(server.url, server.token, worker=WORKER) as wl:
        wl.create_tasks([{"title": f"s{i}", "queue": "sst"} for i in range(4)])
        (claim,) = wl.claim("sst", start=True)
        assert claim.run.status == "running" and claim.run.started_at is not None
        assert wl.claim("sst", limit=1)[0].run.status == "claimed"  # without ``start``, as before
        run, (nxt,) = wl.complete_and_claim(claim.run.id, claim.claim_token, start=True)
        assert run.status == "completed" and nxt.run.status == "running"
        outcomes, (last,) = wl.complete_runs_and_claim([(nxt.run.id, nxt.claim_token)], "sst", start=True)
        assert outcomes[0].status == "completed" and last.run.status == "running"
        assert wl.get_run(last.run.id).status == "running"


async def test_async_claims_that_start(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.token, worker=WORKER) as wl:
        await wl.create_tasks([{"title": f"as{i}", "queue": "asst"} for i in range(3)])
        claims = await wl.claim("asst", limit=2, start=True)
        assert [c.run.status for c in claims] == ["running", "running"]
        outcomes, (last,) = await wl.complete_runs_and_claim(
            [(c.run.id, c.claim_token) for c in claims], "asst", limit=5, start=True
        )
        assert [o.status for o in outcomes] == ["completed", "completed"] and last.run.status == "running"
        _, nothing = await wl.complete_and_claim(last.run.id, last.claim_token, start=True)
        assert nothing == []
