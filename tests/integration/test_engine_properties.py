"""A Hypothesis state machine drives the real engine (SQLite, manual clock) through random work.

After every step the invariants are read back through the engine: one active run per task, a task is
in progress exactly when a run is held, completed tasks have exactly one completed run, attempts stay
within bounds, closed tasks stay closed, open work always has its next run queued, and after a tick no
held run has a lease in the past. Each run operation must succeed exactly when its token is current.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness import Harness
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from workloom.domain.clock import ManualClock
from workloom.domain.errors import Conflict, StaleClaim
from workloom.domain.models import Claim, Run, Task
from workloom.domain.queries import ListQuery
from workloom.domain.run_states import ACTIVE_RUN_STATUSES, HELD_RUN_STATUSES
from workloom.domain.task_states import FINAL_TASK_STATUSES
from workloom.engine import runs, tasks
from workloom.engine.service import Workloom
from workloom.engine.unit import Unit

T = TypeVar("T")
QUEUE_MAX_ATTEMPTS = 3
index = st.integers(min_value=0, max_value=1_000)


class EngineMachine(RuleBasedStateMachine):
    template: Path  # a migrated SQLite file, set by the test

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="workloom-prop-"))
        shutil.copyfile(self.template, self.directory / "workloom.db")
        self.clock = ManualClock()
        self.wl = Workloom.from_url(f"sqlite:///{self.directory / 'workloom.db'}", self.clock)
        self.h = self.run(Harness.open(self.wl, self.clock))
        self.run(
            self.h.queue(
                "work",
                lease_seconds=30,
                max_attempts=QUEUE_MAX_ATTEMPTS,
                initial_interval_seconds=5,
                backoff_coefficient=2,
            )
        )
        self.task_ids: list[str] = []
        self.claims: list[Claim] = []
        self.closed: dict[str, str] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.wl.stop())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules ---------------------------------------------------------------------------------------

    @rule(
        max_attempts=st.none() | st.integers(1, 3),
        priority=st.sampled_from(["low", "medium", "high", "urgent"]),
        parent=st.none() | index,
    )
    def create_task(self, max_attempts: int | None, priority: str, parent: int | None) -> None:
        parent_id = self.task_ids[parent % len(self.task_ids)] if parent is not None and self.task_ids else None
        task = self.run(
            self.h.create(queue="work", max_attempts=max_attempts, priority=priority, parent_task_id=parent_id)
        )
        assert task.status == "ready"
        self.task_ids.append(task.id)

    @rule(limit=st.integers(1, 3), lease_seconds=st.sampled_from([None, 5, 30]))
    def claim(self, limit: int, lease_seconds: int | None) -> None:
        claims = self.run(self.h.claim("work", limit=limit, lease_seconds=lease_seconds))
        assert len(claims) <= limit
        for claim in claims:
            assert (claim.run.status, claim.task.status) == ("claimed", "in_progress")
            assert claim.lease_until > self.clock.now()
        self.claims.extend(claims)

    @precondition(lambda self: self.claims)
    @rule(pick=index)
    def start(self, pick: int) -> None:
        self._holder_call(pick, lambda c: lambda u: runs.start(u, c.run.id, c.claim_token))

    @precondition(lambda self: self.claims)
    @rule(pick=index, extend=st.sampled_from([None, 5, 60]))
    def heartbeat(self, pick: int, extend: int | None) -> None:
        self._holder_call(pick, lambda c: lambda u: runs.heartbeat(u, c.run.id, c.claim_token, extend))

    @precondition(lambda self: self.claims)
    @rule(pick=index)
    def complete(self, pick: int) -> None:
        self._holder_call(pick, lambda c: lambda u: runs.complete(u, c.run.id, c.claim_token, {"by": c.run.id}))

    @precondition(lambda self: self.claims)
    @rule(pick=index, retryable=st.booleans())
    def fail(self, pick: int, retryable: bool) -> None:
        self._holder_call(pick, lambda c: lambda u: runs.fail(u, c.run.id, c.claim_token, "boom", retryable))

    @precondition(lambda self: self.claims)
    @rule(pick=index)
    def release(self, pick: int) -> None:
        self._holder_call(pick, lambda c: lambda u: runs.release(u, c.run.id, c.claim_token, None))

    @rule(seconds=st.sampled_from([0, 1, 5, 10, 31, 120]))
    def advance_and_tick(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.run(self.wl.ticker.tick())
        for _, task_runs in self._snapshot():
            for run in task_runs:
                if run.status in HELD_RUN_STATUSES:
                    assert run.lease_until is not None and run.lease_until > self.clock.now(), run

    @precondition(lambda self: self.task_ids)
    @rule(pick=index)
    def cancel(self, pick: int) -> None:
        task_id = self.task_ids[pick % len(self.task_ids)]
        before = self.run(self.h.task(task_id))
        if before.status in FINAL_TASK_STATUSES:
            with pytest.raises(Conflict):
                self.run(self.h.do(lambda u: tasks.cancel(u, task_id)))
        else:
            assert self.run(self.h.do(lambda u: tasks.cancel(u, task_id))).status == "canceled"

    def _holder_call(self, pick: int, make_op: Any) -> None:
        """Call a run operation with a claim's token: it must succeed exactly when the claim is current."""
        claim = self.claims[pick % len(self.claims)]
        run = self.run(self.h.run(claim.run.id))
        current = run.status in HELD_RUN_STATUSES and run.lease_until is not None and run.lease_until > self.clock.now()
        if current:
            self.run(self.h.do(make_op(claim)))
        else:
            with pytest.raises(StaleClaim):
                self.run(self.h.do(make_op(claim)))

    # -- invariants ----------------------------------------------------------------------------------

    def _snapshot(self) -> list[tuple[Task, list[Run]]]:
        """Every task with its runs, read in one engine transaction."""

        async def read(u: Unit) -> list[tuple[Task, list[Run]]]:
            page = await tasks.list_tasks(u, ListQuery(limit=500))
            return [(task, await runs.list_for_task(u, task.id)) for task in page.items]

        snapshot = self.run(self.h.do(read))
        assert {task.id for task, _ in snapshot} == set(self.task_ids)
        return snapshot

    @invariant()
    def work_is_consistent(self) -> None:
        for task, task_runs in self._snapshot():
            active = [r for r in task_runs if r.status in ACTIVE_RUN_STATUSES]
            held = [r for r in task_runs if r.status in HELD_RUN_STATUSES]
            queued = [r for r in task_runs if r.status == "queued"]
            completed = [r for r in task_runs if r.status == "completed"]
            limit = task.max_attempts or QUEUE_MAX_ATTEMPTS
            assert len(active) <= 1, task_runs
            assert (task.status == "in_progress") == bool(held), (task.status, task_runs)
            if task.status == "completed":
                assert len(completed) == 1, task_runs
                assert task.output == completed[0].result
            else:
                assert not completed, (task.status, task_runs)
            if task.status in ("ready", "scheduled"):
                assert len(queued) == 1, (task.status, task_runs)  # open work is never lost
            if task.status in FINAL_TASK_STATUSES:
                assert not active, (task.status, task_runs)
            assert task.attempts <= limit
            assert all(r.attempt <= limit for r in task_runs), task_runs
            if task.id in self.closed:
                assert task.status == self.closed[task.id], "a closed task changed status"
            elif task.status in FINAL_TASK_STATUSES:
                self.closed[task.id] = task.status


def test_random_work_keeps_the_engine_invariants(sqlite_template):
    machine = type("Machine", (EngineMachine,), {"template": sqlite_template})
    run_state_machine_as_test(
        machine,
        settings=settings(
            # WORKLOOM_PROPERTY_EXAMPLES=500 for a deeper hunt; the default keeps the suite fast.
            max_examples=int(os.environ.get("WORKLOOM_PROPERTY_EXAMPLES", "30")),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
