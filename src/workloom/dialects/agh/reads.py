"""Engine reads composed for AGH's richer shapes; each runs inside the caller's unit of work.

AGH shows every listed task with its active run, counts and dependency edges: the engine answers these
in batches (one query per kind of fact, whatever the number of tasks).
"""

from __future__ import annotations

from collections.abc import Iterable

from workloom.dialects.agh.shapes import Facts
from workloom.domain.models import Run, Task
from workloom.engine import runs, tasks
from workloom.engine.unit import Unit


async def gather(u: Unit, found: Iterable[Task], *, edges: bool = True) -> Facts:
    """The facts AGH shows beside ``found``; ``edges`` adds dependency edges and the tasks they name."""
    ids = list(dict.fromkeys(t.id for t in found))
    facts = Facts()
    if not ids:
        return facts
    facts.active = await runs.active_for_tasks(u, ids)
    facts.counts = await tasks.counts(u, ids)
    facts.max_attempts = await tasks.max_attempts(u, ids)
    if edges:
        facts.dependencies = await tasks.dependency_records(u, ids)
        named = list(dict.fromkeys(dep for deps in facts.dependencies.values() for dep, _ in deps))
        facts.related = {t.id: t for t in await tasks.get_many(u, named)} if named else {}
    return facts


async def with_run(u: Unit, task: Task) -> tuple[Task, Run | None, Facts]:
    """A task after a transition that may have queued work: the task, its active run, and its facts."""
    facts = await gather(u, [task], edges=False)
    return task, facts.active.get(task.id), facts
