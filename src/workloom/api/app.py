"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from prometheus_client import disable_created_metrics

import workloom
from workloom.api import dispatch, problems
from workloom.api.middleware import Edge
from workloom.api.routers import claims, dashboard, events, inbox, ops, queues, runs, tasks
from workloom.dialects import agh
from workloom.domain.clock import Clock
from workloom.engine.metrics import Metrics
from workloom.engine.service import Workloom
from workloom.settings import Settings

log = logging.getLogger("workloom.server")


async def prepare(wl: Workloom, settings: Settings) -> None:
    """What a server does to its database before it serves: migrate it, and make sure an admin key exists
    (printing one it had to make, unless the settings named it)."""
    await wl.migrate()
    issued = await wl.access.bootstrap(settings.bootstrap_token)
    if issued is not None and settings.bootstrap_token is None:
        # Printed once, to the console of whoever started the server; never logged.
        print(f"Workloom bootstrap admin key (workspace 'default', shown once): {issued.secret}", flush=True)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, prepared: bool = False) -> FastAPI:
    """The application. ``prepared``: the database has been prepared for it (``prepare``) by a supervisor
    that starts several server processes (``api.processes``), so it is not prepared again at startup."""
    settings = settings or Settings.from_env()
    disable_created_metrics()  # type: ignore[no-untyped-call]
    # Made here rather than with the engine (in the lifespan) so that the middleware built now counts into it.
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wl = Workloom.from_url(
            settings.database_url,
            clock,
            pool_size=settings.db_pool_size,
            tick_interval=settings.tick_interval,
            shared_groups=settings.shared_commits,
            claim_poll_seconds=settings.claim_poll_seconds,
            metrics=metrics,
        )
        if not prepared:
            await prepare(wl, settings)
        await wl.start()
        app.state.workloom = wl
        shared = asyncio.create_task(metrics.keep_shared()) if metrics.shared else None
        log.info("ready", extra={"database": wl.db.engine.dialect.name})
        try:
            yield
        finally:
            app.state.stopping.set()
            if shared is not None:
                shared.cancel()
            await wl.stop()

    app = FastAPI(
        title="Workloom", version=workloom.__version__, lifespan=lifespan, default_response_class=ORJSONResponse
    )
    app.state.settings = settings
    app.state.stopping = asyncio.Event()
    app.state.encoded_events = events.EncodedEvents()
    problems.install(app)
    # Routes are matched in order, one by one: the workers' calls first.
    native = (
        runs.router,
        tasks.router,
        queues.router,
        claims.router,
        events.router,
        inbox.router,
        dashboard.router,
        ops.router,
    )
    for router in native:
        app.include_router(router)
    app.add_middleware(Edge, limit=settings.max_body_bytes, requests=metrics.requests)
    agh.mount(app)
    dispatch.install(app, native)  # last: it builds the middleware stack
    return app
