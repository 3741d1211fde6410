"""Server-sent events, read line by line as the HTML standard describes (the subset a client needs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(slots=True)
class SseParser:
    """Feed it lines (without their line ending); it returns an event when a blank line ends one.

    ``last_event_id`` survives across events, as the one to send in ``Last-Event-ID`` when reconnecting;
    ``retry_ms`` is the reconnection delay the server asked for, if it did.
    """

    last_event_id: str | None = None
    retry_ms: int | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _has_data: bool = False

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        event = (
            SseEvent(self._event or "message", "\n".join(self._data), self.last_event_id) if self._has_data else None
        )
        self._event, self._data, self._has_data = "", [], False
        return event

    def reset_partial(self) -> None:
        """Forget a half-received event (its connection dropped); ``last_event_id`` is kept."""
        self._event, self._data, self._has_data = "", [], False
