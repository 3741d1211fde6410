"""What ``Client`` and ``AsyncClient`` share: settings, the default worker identity, request building."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import httpx

from workloom.client._calls import ActorLike, Call, StreamCall
from workloom.client._config import DEFAULT_TIMEOUT, Settings
from workloom.client._retry import Attempts, Reconnects, RetryPolicy


def default_worker() -> dict[str, str]:
    """The actor a claim names when the caller names none: this host and process."""
    return {"kind": "automation", "ref": f"{socket.gethostname()}:{os.getpid()}"}


class ClientBase:
    """Configuration common to both clients; see ``Client`` for the arguments."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        worker: ActorLike | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        retry = RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_cap=backoff_cap)
        self.settings = Settings.resolve(base_url, api_key, timeout, retry)
        self.worker: ActorLike = worker if worker is not None else default_worker()

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def _client_options(self, headers: Mapping[str, str] | None) -> dict[str, Any]:
        return {
            "base_url": self.settings.base_url,
            "headers": self.settings.headers(headers),
            "timeout": self.settings.timeout,
        }

    def _attempts(self, call: Call[Any]) -> Attempts:
        return Attempts(self.settings.retry, retry_safe=call.retry_safe, url=self.base_url)

    def _reconnects(self) -> Reconnects:
        return Reconnects(self.settings.retry, url=self.base_url)

    def _request_args(self, call: Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "params": call.params,
            "json": call.json,
            "headers": call.headers,
            "timeout": self.settings.timeout_for(call),
        }

    def _stream_args(self, stream: StreamCall, last_event_id: str | None) -> dict[str, Any]:
        # a resumed stream is placed by Last-Event-ID alone (the server prefers it over the query)
        return {
            "method": "GET",
            "url": stream.path,
            "params": stream.params,
            "headers": self.settings.stream_headers(last_event_id),
            "timeout": self.settings.stream_timeout(),
        }
