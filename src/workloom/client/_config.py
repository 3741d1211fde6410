"""Client settings from arguments, falling back to ``WORKLOOM_URL`` / ``WORKLOOM_API_KEY``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from workloom.client._calls import Call
from workloom.client._retry import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "WORKLOOM_URL"
KEY_ENV = "WORKLOOM_API_KEY"
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "workloom-python"
STREAM_READ_TIMEOUT = 60.0  # well above the server's keep-alive interval (15 s by default)


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        url = (base_url or env.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else (env.get(KEY_ENV) or None)
        return cls(url, key, timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout), retry)

    def headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {**headers, **(extra or {})}

    def timeout_for(self, call: Call[object]) -> httpx.Timeout:
        """The client's timeout, with a long-poll's wait added to the read timeout."""
        if not call.wait_seconds or self.timeout.read is None:
            return self.timeout
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=self.timeout.read + call.wait_seconds,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def stream_timeout(self) -> httpx.Timeout:
        """The client's timeout, with a read timeout long enough to sit between a quiet stream's keep-alives."""
        read = self.timeout.read
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=None if read is None else max(read, STREAM_READ_TIMEOUT),
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    @staticmethod
    def stream_headers(last_event_id: str | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return headers
