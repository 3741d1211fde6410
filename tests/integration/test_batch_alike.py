"""Values every row of a batch has alike are sent once, not in every row (``fast._Bulk.form``).

A batch's rows go to the database as one statement over a JSON document; from ``fast.HOIST_FROM`` rows a
column whose value is the same in every row (the batch's status, instants, workspace) is a parameter of
its own instead. What must hold: every row reads back as given, whatever is alike and whatever only looks
alike (``1`` and ``true``, one instant in two time zones), and a statement takes a bounded number of texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from harness import Harness
from test_hot_paths import AWKWARD, created_as_given

from workloom.domain.actors import Actor
from workloom.engine import runs
from workloom.engine.tasks import NewTask
from workloom.store import events as event_store
from workloom.store import fast
from workloom.store import tasks as task_store
from workloom.store.fast import write_all

# Enough rows for the set-based form on SQLite too (it takes it from ``MANY_AS_ONE_FROM`` rows).
MANY = max(fast.HOIST_FROM, fast.MANY_AS_ONE_FROM)
WORKER = Actor("agent_session", "alike")


def _forms(h: Harness, statement: fast.Statement) -> dict[tuple[int, ...], str]:
    compiled = statement._compiled if h.wl.db.is_postgres else statement._sqlite
    assert isinstance(compiled, fast._Compiled) and compiled.bulk is not None
    return compiled.bulk.forms


async def test_a_batch_whose_rows_are_alike_but_for_a_few_values_reads_back_as_given(h: Harness) -> None:
    given = [
        NewTask(title="same title", queue="alike", data={"n": 1}, metadata={}, description="same", priority="high")
        for _ in range(MANY)
    ]
    given[-1].data = {"n": True}  # equal to {"n": 1} in Python, not in JSON
    given[-2].description = AWKWARD[0]
    given[3].data = {"n": 1.0}

    made = await created_as_given(h, given)

    kinds = [type((await h.task(t.id)).data["n"]) for t in made]
    assert kinds == [int] * 3 + [float] + [int] * (MANY - 5) + [bool]
    # The values the rows had alike went once: the insert's text of this batch has them as parameters.
    insert = task_store.task_inserts(made)[0].statement
    assert any(hoisted for hoisted in _forms(h, insert)), "no value was sent once for the whole batch"
    claims = await h.claim("alike", limit=MANY)
    assert sorted(c.task.id for c in claims) == sorted(t.id for t in made)


async def test_a_batch_completion_with_alike_results_completes_each_run_with_its_own(h: Harness) -> None:
    made = await created_as_given(h, [NewTask(title=f"t{i}", queue="done") for i in range(MANY)])
    claims = await h.claim("done", limit=MANY, worker=WORKER)
    results: list[Any] = [{"ok": True}] * MANY
    results[0] = {"ok": 1}
    results[1] = None
    items = [(c.run.id, c.claim_token, results[i]) for i, c in enumerate(claims)]

    await h.do(lambda u: runs.complete_many(u, items))

    by_task = {c.task.id: results[i] for i, c in enumerate(claims)}
    for task in made:
        stored = await h.task(task.id)
        assert (stored.status, stored.output) == ("completed", by_task[task.id])
        if stored.output is not None:
            assert type(stored.output["ok"]) is type(by_task[task.id]["ok"])


async def test_one_instant_in_two_time_zones_is_not_taken_for_one_value(h: Harness) -> None:
    task = await h.create("with events", queue="instants")
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    plus_two = at.astimezone(timezone(timedelta(hours=2)))
    rows = [
        {
            "workspace_id": task.workspace_id,
            "task_id": task.id,
            "run_id": None,
            "task_sequence": task.event_sequence + 1 + i,
            "type": "task.noted",
            "actor_kind": WORKER.kind,
            "actor_ref": WORKER.ref,
            "origin_kind": h.principal.origin.kind,
            "origin_ref": h.principal.origin.ref,
            "payload": {"i": i},
            "created_at": plus_two if i % 2 else at,
        }
        for i in range(MANY)
    ]
    async with h.wl.db.transaction() as conn:
        await write_all(conn, event_store.event_inserts(rows))

    noted = [e for e in await h.timeline(task.id) if e.type == "task.noted"]
    assert [e.payload["i"] for e in noted] == list(range(MANY))
    assert {e.created_at for e in noted} == {at}  # the same instant, whichever zone it was given in


async def test_a_statement_takes_a_bounded_number_of_texts_and_writes_every_shape_of_batch(h: Harness) -> None:
    made = []
    for shape in range(2 * fast.MOST_FORMS + 1):
        # Each shape has another set of columns alike in every row: title, description, priority, data.
        alike = [bool(shape & bit) for bit in (1, 2, 4, 8)] + [shape >= 16]
        given = [
            NewTask(
                title="t" if alike[0] else f"t{i}",
                description="d" if alike[1] else f"d{i}",
                priority="low" if alike[2] else ("low", "high")[i % 2],
                data={"k": 1} if alike[3] else {"k": i},
                metadata={} if alike[4] else {"m": i},
                queue="shapes",
            )
            for i in range(MANY)
        ]
        made += await created_as_given(h, given)

    insert = task_store.task_inserts(made)[0].statement
    # More shapes than it takes texts: the first ones seen keep theirs, the rest send every value in every row.
    assert len(_forms(h, insert)) == fast.MOST_FORMS
    assert len({t.number for t in made}) == len(made)
