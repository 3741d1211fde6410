"""Prometheus metrics: counters the engine bumps, gauges read from the database at scrape time."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncConnection

from workloom.domain.clock import Clock
from workloom.engine.unit import Tallied, Unit
from workloom.store import queues as queue_store
from workloom.store import runs as run_store
from workloom.store import tasks as task_store
from workloom.store.database import Database


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("workloom_tasks", "Tasks by status and queue", ["workspace", "queue", "status"], registry=r)
        self.queue_depth = Gauge(
            "workloom_queue_depth", "Runs waiting to be claimed", ["workspace", "queue"], registry=r
        )
        self.queue_oldest = Gauge(
            "workloom_queue_oldest_age_seconds", "Age of the oldest claimable run", ["workspace", "queue"], registry=r
        )
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
            "workloom_claimers_waiting", "Long-poll claims waiting for work in this process", registry=r
        )
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
        self.tasks.clear()
        for workspace_id, queue, status, count in counts:
            self.tasks.labels(workspace_id, queue or "", status).set(count)
        self.queue_depth.clear()
        self.queue_oldest.clear()
        for workspace_id, queue_id, depth, oldest in depths:
            name = names.get(queue_id, queue_id)
            self.queue_depth.labels(workspace_id, name).set(depth)
            self.queue_oldest.labels(workspace_id, name).set((now - oldest).total_seconds() if oldest else 0)
        return generate_latest(self.registry)
