"""A tiny jambonz application for testing the fake: trio-websocket's server side over memory
streams. Tests script the app side explicitly, one socket at a time."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket

from jambonz_trio.testing import FakeCall, open_fake_call

SAY: dict[str, Any] = {"verb": "say", "text": "Hello, how can I help?"}
GATHER: dict[str, Any] = {"verb": "gather", "input": ["speech", "digits"], "actionHook": "/gather"}
HANGUP: dict[str, Any] = {"verb": "hangup"}
SUBPROTOCOL = "ws.jambonz.org"


class AppSocket:
    """The app's end of one WebSocket from the fake."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, request: RequestInfo) -> None:
        self.ws = ws
        self.request = request

    async def recv(self) -> dict[str, Any]:
        """The next message from the fake, decoded."""
        msg = await self.ws.get_message()
        assert isinstance(msg, str), "jambonz only sends text frames"
        obj = json.loads(msg)
        assert isinstance(obj, dict)
        return obj

    async def recv_type(self, mtype: str) -> dict[str, Any]:
        """The next message, asserting its type."""
        obj = await self.recv()
        assert obj["type"] == mtype, f"expected {mtype}, got {obj}"
        return obj

    async def send(self, obj: Any) -> None:
        await self.ws.send_message(obj if isinstance(obj, str | bytes) else json.dumps(obj))

    async def ack(self, msg: dict[str, Any], verbs: list[dict[str, Any]] | None = None) -> None:
        out: dict[str, Any] = {"type": "ack", "msgid": msg["msgid"]}
        if verbs is not None:
            out["data"] = verbs
        await self.send(out)

    async def command(self, name: str, data: Any = None, **envelope: Any) -> None:
        out: dict[str, Any] = {"type": "command", "command": name, **envelope}
        if data is not None:
            out["data"] = data
        await self.send(out)

    async def close(self, code: int = 1000) -> None:
        await self.ws.aclose(code)

    async def closed_code(self) -> int:
        """Drain until the fake closes; return the close code."""
        while True:
            try:
                await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                return 1006 if reason is None else reason.code


class RequestInfo:
    def __init__(self, request: trio_websocket.WebSocketRequest) -> None:
        self.path = request.path
        self.headers = dict(request.headers)
        self.subprotocols = request.proposed_subprotocols


class TinyApp:
    """Serves WebSockets over memory streams; ``connector`` is what the fake dials."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        subprotocol: str | None = SUBPROTOCOL,
        reject: int | None = None,
    ) -> None:
        self._nursery = nursery
        self.subprotocol = subprotocol
        self.reject = reject
        self.requests: list[RequestInfo] = []
        self._send, self._recv = trio.open_memory_channel[AppSocket](100)
        self.connects = 0

    async def connector(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.connects += 1
        self._nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        request = await trio_websocket.wrap_server_stream(self._nursery, stream, max_message_size=2**24)
        info = RequestInfo(request)
        self.requests.append(info)
        if self.reject is not None:
            await request.reject(self.reject, body=b"go away")
            return
        ws = await request.accept(subprotocol=self.subprotocol)
        await self._send.send(AppSocket(ws, info))

    async def accept(self) -> AppSocket:
        """The next socket the fake opened."""
        return await self._recv.receive()

    async def answered(self, program: Sequence[dict[str, Any]] = (SAY, GATHER)) -> AppSocket:
        """The next socket, its ``session:new`` acked with ``program`` and the ``trying``
        ``call:status`` that follows read."""
        s = await self.accept()
        await s.ack(await s.recv_type("session:new"), list(program))
        await s.recv_type("call:status")
        return s


@asynccontextmanager
async def tiny_app(**kwargs: Any) -> AsyncIterator[TinyApp]:
    async with trio.open_nursery() as nursery:
        yield TinyApp(nursery, **kwargs)
        nursery.cancel_scope.cancel()


AppScript = Callable[[TinyApp], Awaitable[None]]


@asynccontextmanager
async def app_running(script: AppScript, **kwargs: Any) -> AsyncIterator[TinyApp]:
    """A TinyApp plus a task running ``script(app)`` (the app's side of the test)."""
    async with tiny_app(**kwargs) as app, trio.open_nursery() as nursery:
        nursery.start_soon(script, app)
        yield app
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def started_call(script: AppScript, **options: Any) -> AsyncIterator[FakeCall]:
    """``script(app)`` running as the app, and a fake call (``options`` are
    :func:`open_fake_call`'s) to it, started: ``session:new`` sent and acked."""
    async with app_running(script) as app, open_fake_call(app.connector, **options) as fc:
        await fc.start()
        yield fc


async def raw_101(stream: trio.abc.Stream, protocol: bytes | None) -> None:
    """Answer a WebSocket upgrade by hand with 101 and the given subprotocol header."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            return
        data += chunk
    key = next(
        line.split(b":", 1)[1].strip()
        for line in data.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    resp = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    )
    if protocol is not None:
        resp += b"Sec-WebSocket-Protocol: " + protocol + b"\r\n"
    await stream.send_all(resp + b"\r\n")
    await trio.sleep_forever()
