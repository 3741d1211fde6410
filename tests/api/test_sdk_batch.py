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
