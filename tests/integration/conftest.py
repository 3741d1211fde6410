"""Engine fixtures: a ``Workloom`` on a fresh migrated database (SQLite and PostgreSQL) with a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from harness import Harness

from workloom.domain.clock import ManualClock
from workloom.engine.service import Workloom


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def wl(migrated_url: str, clock: ManualClock) -> AsyncIterator[Workloom]:
    engine = Workloom.from_url(migrated_url, clock)
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.fixture
async def h(wl: Workloom, clock: ManualClock) -> Harness:
    """An admin of workspace ``acme``."""
    return await Harness.open(wl, clock)
