"""A long-poll's check of whether its client is still there, against a receive channel that behaves as
uvicorn's does once a request's body has been read: it waits until the client disconnects (or the answer
is complete), then says ``http.disconnect``. The real server's case is tests/api/test_api_abandoned_claims.py."""

from __future__ import annotations

import asyncio

from starlette.types import Message

from workloom.api.deps import client_gone


class Channel:
    """The receive side of one request whose body was read."""

    def __init__(self) -> None:
        self.disconnected = False
        self.changed = asyncio.Event()

    async def receive(self) -> Message:
        if not self.disconnected:
            await self.changed.wait()
        return {"type": "http.disconnect"} if self.disconnected else {"type": "http.request", "body": b""}

    def disconnect(self) -> None:
        self.disconnected = True
        self.changed.set()


async def test_a_client_still_connected_is_not_gone_and_a_later_disconnect_is_seen() -> None:
    channel = Channel()
    assert client_gone(channel.receive) is False
    assert client_gone(channel.receive) is False
    channel.disconnect()
    assert client_gone(channel.receive) is True


async def test_a_check_that_found_the_client_there_leaves_nothing_waiting_on_the_channel() -> None:
    channel = Channel()
    assert client_gone(channel.receive) is False
    # Had the check's step been left waiting, a reader that takes the channel's next message would share
    # the wake-up with it; the reader alone is woken, and reads the disconnect.
    reader = asyncio.create_task(channel.receive())
    await asyncio.sleep(0)
    channel.disconnect()
    assert (await asyncio.wait_for(reader, 1.0))["type"] == "http.disconnect"
    assert not channel.changed._waiters  # the event's own list of those waiting on it: none left


async def test_a_message_other_than_a_disconnect_does_not_say_gone() -> None:
    async def body_left() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    assert client_gone(body_left) is False
