"""The native API's dispatch (api/dispatch.py) sends each request to the route FastAPI's router would pick,
and leaves to the router what it does not serve."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.responses import Response

from workloom.api.app import create_app
from workloom.api.dispatch import LeanDispatch
from workloom.api.lean import LeanRoute
from workloom.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    folder: Path = tmp_path_factory.mktemp("dispatch")
    return create_app(Settings.from_env(database_url=f"sqlite:///{folder}/unused.db"))


def _dispatch(app: FastAPI) -> LeanDispatch:
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, LeanDispatch):
        layer = getattr(layer, "app", None)
    assert layer is not None, "the middleware stack has no LeanDispatch in front of the router"
    return layer


def _router_pick(app: FastAPI, method: str, path: str) -> Any:
    """The endpoint FastAPI's own router selects for the request (it then fails for want of a server)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    with contextlib.suppress(Exception):
        asyncio.run(app.router(scope, receive, send))
    return scope.get("endpoint")


def _sample(path_format: str) -> str:
    return re.sub(r"\{[^}]+\}", "x_1", path_format)


def test_every_native_route_is_found_where_the_router_finds_it(app: FastAPI) -> None:
    dispatch = _dispatch(app)
    checked = 0
    for method, entries in dispatch.by_method.items():
        for entry in entries:
            path = _sample(entry.route.path)
            found = dispatch.find(method, path)
            assert found is not None, f"{method} {path}"
            assert found[0].route.endpoint is _router_pick(app, method, path), f"{method} {path}"
            checked += 1
    assert checked > 40  # the whole native API, not a part of it


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/runs/complete", "complete_runs"),  # not /v1/runs/{run_id}/complete
        ("POST", "/v1/runs/r_1/complete", "complete_run"),
        ("POST", "/v1/tasks/batch", "create_tasks"),
        ("GET", "/v1/tasks/t_1", "get_task"),
        ("POST", "/v1/queues/q/claim", "claim"),
    ],
)
def test_paths_that_could_be_confused_go_where_the_router_sends_them(
    app: FastAPI, method: str, path: str, endpoint: str
) -> None:
    found = _dispatch(app).find(method, path)
    assert found is not None
    assert found[0].route.endpoint is _router_pick(app, method, path)
    assert found[0].route.endpoint.__name__ == endpoint


def test_path_parameters_are_taken_from_the_path(app: FastAPI) -> None:
    found = _dispatch(app).find("DELETE", "/v1/tasks/t_9/dependencies/t_3")
    assert found is not None
    assert found[1] == {"task_id": "t_9", "depends_on_id": "t_3"}


def test_what_it_does_not_serve_is_left_to_the_router(app: FastAPI) -> None:
    dispatch = _dispatch(app)
    # A route LeanRoute leaves to FastAPI (a query parameter) is found, without a handler of its own.
    timeline = dispatch.find("GET", "/v1/tasks/t_1/timeline")
    assert timeline is not None and timeline[0].app is None
    # No native route: FastAPI's 404 and 405, the documentation, a dialect's routes.
    assert dispatch.find("POST", "/v1/nothing-here") is None
    assert dispatch.find("DELETE", "/v1/queues") is None
    assert dispatch.find("GET", "/openapi.json") is None
    assert dispatch.find("POST", "/compat/agh/v1/tasks") is None


def test_routes_with_a_parameter_up_front_keep_their_place_in_the_order() -> None:
    declared = APIRouter(route_class=LeanRoute)

    @declared.get("/v1/{kind}/latest")
    async def latest_of_any_kind(kind: str) -> Response:
        return Response()

    @declared.get("/v1/things/latest")
    async def latest_thing() -> Response:
        return Response()  # declared after the parameterised route: never reached for /v1/things/latest

    @declared.get("/v1/things/{thing_id}")
    async def one_thing(thing_id: str) -> Response:
        return Response()

    async def router(scope: Any, receive: Any, send: Any) -> None:
        return None

    dispatch = LeanDispatch(router, [declared])

    def endpoint(path: str) -> str | None:
        found = dispatch.find("GET", path)
        return found[0].route.endpoint.__name__ if found else None

    assert endpoint("/v1/things/latest") == "latest_of_any_kind"  # the first declared that matches
    assert endpoint("/v1/things/t_1") == "one_thing"
    assert endpoint("/v1/others/latest") == "latest_of_any_kind"  # a head no literal route has
    assert endpoint("/v1/others/o_1") is None
