"""A route class that runs this API's endpoints without FastAPI's general dependency solver.

FastAPI still declares every endpoint (its OpenAPI document, its routing, its error handlers): only the
per-request work of calling the endpoint is done here, for the shapes this API's endpoints have — path
parameters that are strings, one JSON body validated by its pydantic type, the request itself, and
dependencies made of those. That work took a fifth of the server's CPU per create (``solve_dependencies``
walking its caches and scopes on every request, the body parsed by the standard library and validated
in a second pass); here the body is parsed and validated in one step by pydantic's JSON validator.
Anything else (query, header or cookie parameters, a dependency of another shape) keeps FastAPI's own
handler, so an endpoint is never served differently from how it is declared.

Validation errors are FastAPI's: a ``RequestValidationError`` with each error located under ``body``, as
its own handler reports them, so clients see the same problem documents either way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

Resolve = Callable[[Request, dict[Any, Any]], Awaitable[Any]]


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = _lean_handler(_declared(self))
        return handler if handler is not None else super().get_route_handler()


def lean_handler(route: APIRoute) -> Callable[[Request], Coroutine[Any, Any, Response]] | None:
    """The handler a ``LeanRoute`` serves ``route`` with, as declared; None where FastAPI's own serves it."""
    return _lean_handler(route) if isinstance(route, LeanRoute) else None


def _declared(route: APIRoute) -> Any:
    """What the route is as included (a router's prefix and dependencies added), where FastAPI builds the
    handler once per inclusion and says so through a context variable; else the route itself."""
    context_var = getattr(fastapi_routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    return context if context is not None and getattr(context, "original_route", None) is route else route


def _lean_handler(route: Any) -> Callable[[Request], Coroutine[Any, Any, Response]] | None:
    dependant: Dependant | None = getattr(route, "dependant", None)
    if dependant is None or dependant.call is None or not _returns_response(dependant.call):
        return None
    resolve = _resolver(dependant)
    if resolve is None:
        return None
    takes, body = _body(route)
    if not takes:
        return None

    async def handle(request: Request) -> Response:
        cache: dict[Any, Any] = {}
        if body is not None:
            cache[_BODY] = await body(request)
        response: Response = await resolve(request, cache)
        return response

    return handle


_BODY = object()  # the cache slot of the request's validated body


def _returns_response(call: Callable[..., Any]) -> bool:
    annotation = inspect.signature(call, eval_str=True).return_annotation
    return inspect.isclass(annotation) and issubclass(annotation, Response)


def _resolver(dependant: Dependant) -> Resolve | None:
    """Calls ``dependant`` with what it takes, or None where it takes something this class does not give."""
    call = dependant.call
    if call is None or not inspect.iscoroutinefunction(call):
        return None
    unsupported = (
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    if any(unsupported) or any(field.field_info.annotation is not str for field in dependant.path_params):
        return None
    if len(dependant.body_params) > 1:
        return None
    subs: list[tuple[str, Any, Resolve]] = []
    for sub in dependant.dependencies:
        resolve_sub = _resolver(sub)
        if resolve_sub is None or sub.name is None:
            return None
        subs.append((sub.name, sub.call, resolve_sub))
    paths = [field.name for field in dependant.path_params]
    body_name = dependant.body_params[0].name if dependant.body_params else None
    request_name = dependant.request_param_name

    async def resolve(request: Request, cache: dict[Any, Any]) -> Any:
        kwargs: dict[str, Any] = {name: request.path_params[name] for name in paths}
        if request_name is not None:
            kwargs[request_name] = request
        if body_name is not None:
            kwargs[body_name] = cache[_BODY]
        for name, sub_call, resolve_sub in subs:
            # One value per dependency per request, as FastAPI caches them.
            if sub_call in cache:
                kwargs[name] = cache[sub_call]
            else:
                kwargs[name] = cache[sub_call] = await resolve_sub(request, cache)
        return await call(**kwargs)

    return resolve


def _body(route: Any) -> tuple[bool, Callable[[Request], Awaitable[Any]] | None]:
    """Whether this class can take the endpoint's body, and its parser and validator (None: no body)."""
    field = getattr(route, "body_field", None)
    if field is None:
        return True, None
    if getattr(route, "_embed_body_fields", True):
        return False, None
    adapter: TypeAdapter[Any] = TypeAdapter(field.field_info.annotation)
    required = field.field_info.is_required()
    default = None if required else field.field_info.get_default(call_default_factory=True)

    async def parsed(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            if required:
                raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
            return default
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors, body=raw) from None

    return True, parsed
