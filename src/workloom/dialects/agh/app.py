"""The AGH dialect as a sub-application mounted on the native app at ``/compat/agh``.

A sub-application keeps the dialect's own error shape (``{"error": …}``) and its own OpenAPI document
(``/compat/agh/openapi.json``) apart from the native API's, while sharing the host's engine, settings
and shutdown signal.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from workloom.dialects.agh import errors, routes_agent, routes_observe, routes_runs, routes_tasks, routes_views

PREFIX = "/compat/agh"


def build(host: FastAPI) -> FastAPI:
    app = FastAPI(
        title="Workloom — AGH runtime tasks dialect",
        description="The AGH runtime tasks API served on Workloom; see docs/dialects/agh.md.",
        default_response_class=ORJSONResponse,
        docs_url=None,
        redoc_url=None,
    )
    app.state.host = host  # the engine is on the host's state once its lifespan has started
    app.state.settings = host.state.settings
    app.state.stopping = host.state.stopping
    errors.install(app)
    for router in (
        routes_agent.router,
        routes_observe.router,
        routes_observe.triage_router,
        routes_runs.router,
        routes_runs.task_runs,
        routes_views.router,
        routes_tasks.router,
    ):
        app.include_router(router)
    return app


def mount(host: FastAPI) -> None:
    """Serve the dialect under ``/compat/agh`` of ``host`` (the native app), and answer the host's own
    refusals of requests to it (body too large, not JSON) in the dialect's error shape."""
    host.mount(PREFIX, build(host))
    host.add_middleware(errors.NativeRefusals, prefix=PREFIX)
