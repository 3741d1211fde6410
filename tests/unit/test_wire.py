"""A connection's writes gathered (``api.wire``): each response leaves in one write, in order, before a close."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from workloom.api.wire import GatheredWrites, OneWriteHttp

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that keeps what it is asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.done.append(("write", bytes(data)))

    def close(self) -> None:
        self.done.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.done.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    @property
    def writes(self) -> list[bytes]:
        return [data for what, data in self.done if what == "write"]


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)  # the next part comes on a later pass of the loop
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b'{"status":"ok"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _serve(request: bytes, until: Any) -> Recording:
    """``request`` fed to the protocol on a recording transport; the loop run until ``until(transport)``."""
    config = uvicorn.Config(_hello, http=OneWriteHttp, lifespan="off", log_config=None)
    config.load()
    protocol = OneWriteHttp(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = Recording()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(1000):
        if until(transport):
            break
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


async def test_a_response_leaves_in_one_write_head_and_body_together() -> None:
    transport = await _serve(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", lambda t: t.writes)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b'\r\n\r\n{"status":"ok"}')


async def test_a_response_before_a_close_is_written_before_the_close() -> None:
    transport = await _serve(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", lambda t: t.closing)
    done = [what for what, _ in transport.done]
    assert done[:2] == ["write", "close"] and "write" not in done[2:]  # (uvicorn may close twice)
    assert transport.writes[0].endswith(b'{"status":"ok"}')


async def test_a_streamed_response_arrives_whole_and_in_order() -> None:
    transport = await _serve(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", lambda t: b"0\r\n\r\n" in b"".join(t.writes))
    sent = b"".join(transport.writes)
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent.endswith(b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n")
    assert len(transport.writes) == 4  # the head went with the first part


async def test_what_is_held_goes_nowhere_once_the_connection_is_aborted_or_closed_by_the_peer() -> None:
    loop = asyncio.get_running_loop()
    aborted = Recording()
    writes = GatheredWrites(aborted, loop)
    writes.write(HEAD)
    writes.abort()
    await asyncio.sleep(0)
    assert aborted.done == [("abort", b"")]

    gone = Recording()
    writes = GatheredWrites(gone, loop)
    writes.write(HEAD)
    gone.closing = True  # the peer went away before the loop's pass ended
    await asyncio.sleep(0)
    assert gone.done == []


async def test_a_head_with_no_body_after_it_leaves_at_the_end_of_the_loop_pass() -> None:
    transport = Recording()
    writes = GatheredWrites(transport, asyncio.get_running_loop())
    writes.write(HEAD)
    assert transport.writes == []
    assert writes.get_write_buffer_size() == len(HEAD)
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]


async def test_anything_but_a_head_is_written_at_once() -> None:
    transport = Recording()
    writes = GatheredWrites(transport, asyncio.get_running_loop())
    writes.write(b"data: 1\n\n")
    writes.writelines([b"a", memoryview(b"b")])
    writes.write(b"")
    assert transport.writes == [b"data: 1\n\n", b"a", b"b"]
