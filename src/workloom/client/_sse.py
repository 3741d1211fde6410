"""Server-sent events: a line decoder (the part of the HTML standard a client needs) and the stream objects
the clients hand out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from types import TracebackType

from workloom.client.models import Event


@dataclass(slots=True)
class SseDecoder:
    """Feed it lines without their line ending; it returns an ``Event`` when a blank line ends a message.

    ``last_event_id`` outlives each message: it is what to send as ``Last-Event-ID`` when reconnecting. An
    ``id:`` line counts only once its message is complete, so a message cut off by a dropped connection is
    asked for again.
    """

    last_event_id: str | None = None
    _id: str | None = None
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id
        data, self._data = self._data, []
        return Event.model_validate_json("\n".join(data)) if data else None

    def reset(self) -> None:
        """Forget a half-received message (its connection dropped); ``last_event_id`` is kept."""
        self._id = self.last_event_id
        self._data = []


class EventStream:
    """Events as they happen, reconnecting with ``Last-Event-ID`` after a drop. Iterate it; close it (or use
    it as a context manager) to end the connection."""

    def __init__(self, events: Generator[Event, None, None], decoder: SseDecoder) -> None:
        self._events = events
        self._decoder = decoder

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event received: pass it as ``after`` to resume later."""
        return self._decoder.last_event_id

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncEventStream:
    """The async ``EventStream``: ``async for`` it; ``aclose()`` it (or ``async with`` it) when done."""

    def __init__(self, events: AsyncGenerator[Event, None], decoder: SseDecoder) -> None:
        self._events = events
        self._decoder = decoder

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event received: pass it as ``after`` to resume later."""
        return self._decoder.last_event_id

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
