"""Prometheus metrics: counters the engine bumps, gauges read from the database at scrape time.

When several server processes serve one port (``api.processes``), each keeps its counters, histograms
and claimer gauge in files of the directory ``PROMETHEUS_MULTIPROC_DIR`` names, and a scrape, whichever
process answers it, adds up every process's (prometheus_client's multiprocess mode). The gauges read from
the database are the whole database's in any process, so they are made anew for each scrape rather than
kept, by any process, in a file or in a gauge two concurrent scrapes would both clear and fill."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.clock import Clock
from workloom.engine.unit import Tallied, Unit
from workloom.store import queues as queue_store
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store.database import Database

SHARED_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
# How often a process of several writes its waiting claimers for the others' scrapes to read.
CLAIMERS_EVERY_SECONDS = 1.0


class Metrics:
    def __init__(self) -> None:
        # Several server processes add up their counts (see the module's note).
        self.shared = bool(os.environ.get(SHARED_DIRECTORY))
        self.registry = CollectorRegistry()
        r = self.registry
        self.claims = Counter("workloom_claims_total", "Runs claimed", ["queue"], registry=r)
        self.completions = Counter("workloom_completions_total", "Runs completed", registry=r)
        self.failures = Counter("workloom_failures_total", "Runs failed by their holder", registry=r)
        self.lease_expiries = Counter("workloom_lease_expiries_total", "Runs whose lease ran out", registry=r)
        self.claim_latency = Histogram(
            "workloom_claim_latency_seconds",
            "Time to answer a claim request (excluding long-poll waiting)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.claimers_waiting = Gauge(
            "workloom_claimers_waiting",
            "Long-poll claims waiting for work (in every process of the server)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._claimers: Callable[[], int] = lambda: 0
        self.handoffs = Counter(
            "workloom_handoffs_total",
            "Runs claimed for a waiting claimer in the transaction that created them",
            registry=r,
        )
        self.shared_commits = Histogram(
            "workloom_shared_commit_calls",
            "Calls that committed together in one shared transaction (groups of more than one)",
            buckets=(2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self._tallied: dict[Tallied, Counter] = {
            "completions": self.completions,
            "failures": self.failures,
            "lease_expiries": self.lease_expiries,
        }
        # Counted by the API's middleware, which is why it is made with the application (see api.app).
        self.requests = Counter("workloom_http_requests_total", "HTTP requests", ["method", "status"], registry=r)

    def count_claimers(self, count: Callable[[], int]) -> None:
        """The claimer gauge reads ``count``: at each scrape in a lone process; in one of several, every
        ``CLAIMERS_EVERY_SECONDS`` while ``keep_shared`` runs, for the scrapes of any process to add up."""
        self._claimers = count
        if not self.shared:
            self.claimers_waiting.set_function(count)

    async def keep_shared(self) -> None:
        """Write this process's gauges for the others' scrapes, until cancelled (with several processes)."""
        while True:
            self.claimers_waiting.set(self._claimers())
            await asyncio.sleep(CLAIMERS_EVERY_SECONDS)

    def count(self, unit: Unit) -> None:
        """Apply a committed unit of work's tallies."""
        for name, amount in unit.tallies.items():
            self._tallied[name].inc(amount)

    async def render(self, db: Database, clock: Clock) -> bytes:
        now = clock.now()

        async def read(
            conn: AsyncConnection,
        ) -> tuple[list[tuple[str, str | None, str, int]], list[tuple[str, str, int, datetime | None]], dict[str, str]]:
            counts = await task_store.task_counts_by_status(conn)
            depths = await run_store.run_queue_depths(conn, now)
            by_workspace: dict[str, set[str]] = {}
            for workspace_id, queue_id, _, _ in depths:
                by_workspace.setdefault(workspace_id, set()).add(queue_id)
            names: dict[str, str] = {}
            for workspace_id, queue_ids in by_workspace.items():
                names.update(await queue_store.queue_names(conn, workspace_id, queue_ids))
            return counts, depths, names

        counts, depths, names = await db.reading(read)
        tasks = GaugeMetricFamily(
            "workloom_tasks", "Tasks by status and queue", labels=["workspace", "queue", "status"]
        )
        for workspace_id, queue, status, count in counts:
            tasks.add_metric([workspace_id, queue or "", status], count)
        depth = GaugeMetricFamily("workloom_queue_depth", "Runs waiting to be claimed", labels=["workspace", "queue"])
        oldest = GaugeMetricFamily(
            "workloom_queue_oldest_age_seconds", "Age of the oldest claimable run", labels=["workspace", "queue"]
        )
        for workspace_id, queue_id, waiting, since in depths:
            name = names.get(queue_id, queue_id)
            depth.add_metric([workspace_id, name], waiting)
            oldest.add_metric([workspace_id, name], (now - since).total_seconds() if since else 0)
        return generate_latest(_Read([tasks, depth, oldest])) + generate_latest(self._counted())

    def _counted(self) -> CollectorRegistry:
        """What the processes counted: this one's, or every process's added up."""
        if not self.shared:
            return self.registry
        every = CollectorRegistry()
        MultiProcessCollector(every)  # type: ignore[no-untyped-call]
        return every


class _Read(Collector):
    """Metric families read for one scrape, as a collector."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families
