"""A small client for the native API: base URL and key from the environment, Bearer auth, and errors
turned into one line that says what went wrong and what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from workloom.cli.output import fail

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "WORKLOOM_URL"
KEY_ENV = "WORKLOOM_API_KEY"
KEY_HINT = (
    f"Set {KEY_ENV} to an API key, e.g. one made with "
    "'workloom keys create --workspace default --role member' (or the key 'workloom serve' printed at first start)."
)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    url: str
    key: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        url = (env.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        return cls(url=url, key=env.get(KEY_ENV) or None)


class ApiError(Exception):
    """The server answered with an error status; ``problem`` is its problem+json body (or ``{}``)."""

    def __init__(self, status: int, problem: dict[str, Any], text: str = "") -> None:
        super().__init__(format_problem(status, problem, text))
        self.status = status
        self.problem = problem
        self.text = text


class Unreachable(Exception):
    """No answer at all: nothing listening, DNS failure, timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the Workloom server isn't reachable at {url} ({reason})")
        self.url = url
        self.reason = reason


def format_problem(status: int, problem: Mapping[str, Any], text: str = "") -> str:
    """One line from a problem+json body: title, status, detail, then each field error."""
    if not problem:
        body = " ".join(text.split())[:200]
        reason = httpx.codes.get_reason_phrase(status) or "Error"
        return f"{reason} (HTTP {status})" + (f": {body}" if body else "")
    title = str(problem.get("title") or httpx.codes.get_reason_phrase(status) or "Error")
    line = f"{title} (HTTP {status})"
    detail = problem.get("detail")
    if detail:
        line += f": {detail}"
    fields = [_field_error(error) for error in problem.get("errors") or []]
    if fields:
        line += " — " + "; ".join(fields)
    return line


def _field_error(error: Any) -> str:
    if not isinstance(error, Mapping):
        return str(error)
    field, message = error.get("field"), error.get("message", "invalid")
    return f"{field}: {message}" if field else str(message)


def hint_for(status: int) -> str | None:
    if status == 401:
        return KEY_HINT
    if status == 403:
        return "This key's role may not do that; use a key with a broader role (admin or member)."
    return None


def clean_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop unset filters (httpx would send them as empty values)."""
    return {key: value for key, value in (params or {}).items() if value is not None}


class Api:
    """Synchronous calls to ``/v1``; each returns the decoded JSON body (``None`` for 204)."""

    def __init__(self, settings: ApiSettings, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        headers = {"Accept": "application/json", "User-Agent": "workloom-cli"}
        if settings.key:
            headers["Authorization"] = f"Bearer {settings.key}"
        self.client = httpx.Client(base_url=settings.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if "params" in kwargs:
            kwargs["params"] = clean_params(kwargs["params"])
        with self.translate_errors():
            response = self.client.request(method, path, **kwargs)
        raise_for_problem(response)
        return response.json() if response.content else None

    @contextmanager
    def stream(
        self, path: str, params: Mapping[str, Any], headers: Mapping[str, str], read_timeout: float
    ) -> Iterator[httpx.Response]:
        """An open streaming response (for SSE); error statuses raise before the body is read."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with (
            self.translate_errors(),
            self.client.stream(
                "GET", path, params=clean_params(params), headers=dict(headers), timeout=timeout
            ) as response,
        ):
            if response.is_error:
                response.read()
                raise_for_problem(response)
            yield response

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise Unreachable(self.settings.url, _connect_reason(exc)) from exc
        except httpx.TimeoutException as exc:
            raise Unreachable(self.settings.url, f"no answer in time: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.settings.url, str(exc) or type(exc).__name__) from exc


def _connect_reason(exc: httpx.ConnectError) -> str:
    text = str(exc)
    return (
        "connection refused" if "refused" in text.lower() or "errno 111" in text.lower() else text or "cannot connect"
    )


def raise_for_problem(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    raise ApiError(response.status_code, problem, "" if problem else response.text)


def report(exc: ApiError | Unreachable) -> None:
    """Print the error as one red line plus what to do, and exit 1."""
    if isinstance(exc, Unreachable):
        fail(
            f"The Workloom server isn't reachable at {exc.url} ({exc.reason}).",
            hint=f"Start it with 'workloom serve', or set {URL_ENV} to the address it listens on.",
        )
    fail(str(exc), hint=hint_for(exc.status))


@contextmanager
def connect(*, need_key: bool = True) -> Iterator[Api]:
    """The client for one command, configured from the environment; API errors end the command cleanly."""
    settings = ApiSettings.from_env()
    if need_key and not settings.key:
        fail(f"No API key: {KEY_ENV} is not set.", hint=KEY_HINT)
    try:
        with Api(settings) as api:
            yield api
    except (ApiError, Unreachable) as exc:
        report(exc)
