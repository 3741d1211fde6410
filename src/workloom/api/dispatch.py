"""The native API's requests matched here and sent straight to their lean handlers.

FastAPI (from 0.137) matches a request by walking each included router's effective routes, setting and
restoring its own scope keys around every candidate it tries. Measured in-process on the development
machine, that walk made ``GET /healthz`` cost 208 µs of CPU with FastAPI 0.165 against 65 µs with 0.136,
and it was ~7 % of a create's server CPU. This package's own endpoints are a fixed list, declared on
routers it owns and included as they are (no prefix or dependencies added at inclusion), so they are
matched here instead: in their declaration order, each by the pattern Starlette compiled for it, after a
test of the literal start of its path. The request then goes to the handler ``LeanRoute`` built for it,
inside the same middleware (exception handlers included) as the router it stands in front of.

What this does not serve goes to FastAPI's router as before: a route ``LeanRoute`` leaves to FastAPI (the
first route that matches decides), a path none of these routes matches (FastAPI's 404 or 405), and every
route of the application declared elsewhere (the documentation, a dialect's mount), whose paths the native
routes' do not overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from workloom.api.lean import lean_handler


@dataclass(frozen=True, slots=True)
class _Entry:
    route: APIRoute
    literal: str  # the path up to its first parameter: tested before the pattern
    app: ASGIApp | None  # the lean handler as an ASGI app; None: FastAPI serves this route


def _head(path: str) -> tuple[str, ...]:
    """A path's first two segments (``/v1/tasks/t_1`` → ``("v1", "tasks")``): the key routes are kept by."""
    return tuple(path.split("/", 3)[1:3])


class LeanDispatch:
    """Stands where the router was (innermost, inside the exception handlers); see the module's note."""

    def __init__(self, router: ASGIApp, routers: Sequence[APIRouter]) -> None:
        self.router = router
        self.by_method: dict[str, list[_Entry]] = {}
        for declared in routers:
            for route in declared.routes:
                if not isinstance(route, APIRoute):
                    continue
                handler = lean_handler(route)
                entry = _Entry(route, route.path.split("{", 1)[0], request_response(handler) if handler else None)
                for method in route.methods or ():
                    self.by_method.setdefault(method, []).append(entry)
        # Per method, the routes a path could match by its first two segments, in declaration order: those
        # whose path starts with those segments, and those with a parameter among them (any path's).
        self._by_head: dict[tuple[str, tuple[str, ...]], list[_Entry]] = {}
        self._anywhere: dict[str, list[_Entry]] = {}
        for method, entries in self.by_method.items():
            anywhere = [e for e in entries if "{" in "/".join(_head(e.route.path))]
            self._anywhere[method] = anywhere
            for head in {_head(e.route.path) for e in entries if e not in anywhere}:
                self._by_head[method, head] = [e for e in entries if e in anywhere or _head(e.route.path) == head]

    def find(self, method: str, path: str) -> tuple[_Entry, dict[str, object]] | None:
        """The first route (in declaration order) this method and path match, and its path parameters."""
        entries = self._by_head.get((method, _head(path)))
        for entry in entries if entries is not None else self._anywhere.get(method, ()):
            if not path.startswith(entry.literal):
                continue
            match = entry.route.path_regex.match(path)
            if match is None:
                continue
            convertors = entry.route.param_convertors
            return entry, {name: convertors[name].convert(value) for name, value in match.groupdict().items()}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            found = self.find(scope["method"], scope["path"])
            app = found[0].app if found is not None else None
            if found is not None and app is not None:
                entry, params = found
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                scope["endpoint"] = entry.route.endpoint
                scope["route"] = entry.route
                await app(scope, receive, send)
                return
        await self.router(scope, receive, send)


def install(app: FastAPI, routers: Sequence[APIRouter]) -> LeanDispatch | None:
    """Build ``app``'s middleware stack now, with a ``LeanDispatch`` for ``routers`` in its router's place;
    call it once every route and middleware is added. None (and the stack left to be built as usual)
    where the stack does not hold the router as the inner app of a middleware."""
    stack = app.build_middleware_stack()
    layer: Any = stack
    while getattr(layer, "app", None) is not app.router:
        layer = getattr(layer, "app", None)
        if layer is None:
            return None
    dispatch = LeanDispatch(app.router, routers)
    layer.app = dispatch
    app.middleware_stack = stack
    return dispatch
