"""Nothing crosses workspaces: another workspace's things are not found and never listed."""

from __future__ import annotations

import pytest

from workloom.domain.errors import NotFound, ValidationFailed
from workloom.domain.queries import ListQuery
from workloom.engine import queues, runs, tasks


@pytest.fixture
async def acme(h):
    """Workspace acme with one queue, a claimed task, a parent and a child."""
    parent = await h.create("acme parent", queue="shared-name")
    child = await h.create("acme child", parent_task_id=parent.id)
    claim = await h.claim_one("shared-name")
    return parent, child, claim


async def test_another_workspace_cannot_see_or_touch_anything(h, acme):
    parent, child, claim = acme
    other = await h.other_workspace("globex")

    for task_ref in (parent.id, parent.identifier, child.id):
        with pytest.raises(NotFound):
            await other.task(task_ref)
    attempts = [
        lambda u: tasks.children(u, parent.id),
        lambda u: tasks.tree(u, parent.id),
        lambda u: tasks.cancel(u, parent.id),
        lambda u: tasks.patch(u, parent.id, {"title": "mine now"}),
        lambda u: tasks.delete(u, child.id),
        lambda u: tasks.approve(u, parent.id),
        lambda u: runs.get(u, claim.run.id),
        lambda u: runs.list_for_task(u, parent.id),
        lambda u: runs.complete(u, claim.run.id, claim.claim_token, "stolen"),
        lambda u: runs.heartbeat(u, claim.run.id, claim.claim_token, 60),
        lambda u: queues.get(u, "shared-name"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            await other.do(attempt)
    with pytest.raises(NotFound):
        await other.claim("shared-name")
    with pytest.raises(NotFound):
        await other.timeline(parent.id)

    page = await other.list(ListQuery(count=True))
    assert (page.items, page.total) == ([], 0)
    assert await other.do(queues.list_all) == []

    # acme's work is exactly as it was.
    assert (await h.task(parent.id)).status == "in_progress"
    assert (await h.task(child.id)).title == "acme child"
    assert (await h.run(claim.run.id)).status == "claimed"


async def test_same_names_in_two_workspaces_are_two_things(h, acme):
    parent, _, _ = acme
    other = await h.other_workspace("globex")
    theirs = await other.create("globex task", queue="shared-name")
    assert theirs.identifier == "WL-1"  # numbering is per workspace
    assert (await other.task("WL-1")).id == theirs.id
    assert (await h.task("WL-1")).id == parent.id

    [claim] = await other.claim("shared-name", limit=10)
    assert claim.task.id == theirs.id
    assert [t.id for t in (await other.list(ListQuery())).items] == [theirs.id]
    assert theirs.id not in [t.id for t in (await h.list(ListQuery())).items]


async def test_a_task_cannot_reference_another_workspace(h, acme):
    parent, _, _ = acme
    other = await h.other_workspace("globex")
    with pytest.raises(ValidationFailed):
        await other.create("sneaky child", parent_task_id=parent.id)
    with pytest.raises(ValidationFailed):
        await other.create("sneaky dependent", depends_on=[parent.id])
