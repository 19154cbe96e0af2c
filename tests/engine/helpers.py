"""Small raw-websocket helpers for engine tests (below the fake jambonz)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage

from jambonz_trio import Call, JambonzServer
from jambonz_trio._call import engine_of
from tests.helpers import SESSION_DATA, msg, open_ws, recv

__all__ = [
    "BAD_FRAME",
    "PassThroughStream",
    "SESSION_DATA",
    "RawClient",
    "drain",
    "hook_frames",
    "hooks_behind_a_blocked_write",
    "inner_enter",
    "msg",
    "new_call",
    "raw_client",
    "raw_ws",
    "reconnect",
    "recv",
    "start_and_drop",
    "wait_link_closed",
]


class PassThroughStream(trio.abc.Stream):
    """A stream that passes everything to ``inner``: subclasses change what they need (the
    server's end of a memory stream, wrapped)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def raw_ws(
    server: JambonzServer,
    *,
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    lockstep: bool = False,
) -> AsyncIterator[WebSocketConnection]:
    """A bare jambonz-like websocket to ``server`` over memory streams."""
    async with open_ws(await server.connect_memory(lockstep=lockstep), path, headers=headers or []) as ws:
        yield ws


class RawClient:
    """A jambonz-like websocket client on wsproto, driven by hand (no background reader):
    it reads only when asked, so tests control pongs, back-pressure and close races."""

    def __init__(self, stream: trio.abc.Stream, *, auto_pong: bool = True) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.auto_pong = auto_pong
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._events: list[Any] = []
        self._text: list[str] = []

    async def handshake(
        self,
        path: str = "/",
        *,
        subprotocols: list[str] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Any:
        await self.stream.send_all(
            self.ws.send(
                Request(
                    host="localhost",
                    target=path,
                    subprotocols=["ws.jambonz.org"] if subprotocols is None else subprotocols,
                    extra_headers=extra_headers or [],
                )
            )
        )
        return await self._next_raw()

    async def _next_raw(self) -> Any:
        while not self._events:
            data = bytes(await self.stream.receive_some(65536))
            self.ws.receive_data(data if data else None)
            self._events.extend(self.ws.events())
            if not data and not self._events:
                raise EOFError
        return self._events.pop(0)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def send(self, mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> None:
        await self.send_text(msg(mtype, msgid, data, **env))

    async def receive(self) -> dict[str, Any] | None:
        """The next text message as JSON, or ``None`` once the server closed.

        Pings are answered while the connection is open (a Ping parsed in the same read as a
        Close can no longer be answered, and is not); the Close frame's code and reason are
        recorded."""
        while True:
            try:
                event = await self._next_raw()
            except EOFError:
                return None
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text = "".join(self._text)
                    self._text.clear()
                    out: dict[str, Any] = json.loads(text)
                    return out
            elif isinstance(event, Ping):
                self.pings += 1
                if self.auto_pong and self.ws.state is ConnectionState.OPEN:
                    await self._send_quietly(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_quietly(event.response())
                return None

    async def answer_receipt(self) -> None:
        """Read the Ping the server writes right after an answer and answer it, as jambonz's
        own client does on arrival (the Pong proves the answer was read: docs/reconnects.md).
        Anything else read first stays queued for :meth:`receive`."""
        event = await self._next_raw()
        if isinstance(event, Ping):
            self.pings += 1
            if self.auto_pong and self.ws.state is ConnectionState.OPEN:
                await self._send_quietly(event.response())
        else:
            self._events.insert(0, event)

    async def _send_quietly(self, event: Any) -> None:
        try:
            await self.stream.send_all(self.ws.send(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def close(self, code: int = 1000) -> None:
        """Send Close if the connection is still open (no-op otherwise)."""
        if self.ws.state is ConnectionState.OPEN:
            await self._send_quietly(CloseConnection(code=code))

    async def drop(self) -> None:
        await trio.aclose_forcefully(self.stream)


@asynccontextmanager
async def raw_client(
    server: JambonzServer,
    path: str = "/",
    *,
    lockstep: bool = False,
    auto_pong: bool = True,
) -> AsyncIterator[RawClient]:
    stream = await server.connect_memory(lockstep=lockstep)
    client = RawClient(stream, auto_pong=auto_pong)
    event = await client.handshake(path)
    assert isinstance(event, AcceptConnection), event
    try:
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def new_call(client: RawClient, sid: str = "sid-1", msgid: str = "m1") -> dict[str, Any] | None:
    """Start a call: ``session:new``, its ack, and the Pong to the server's receipt Ping."""
    await client.send("session:new", msgid, {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
    ack = await client.receive()
    if ack is not None and ack.get("type") == "ack":
        await client.answer_receipt()
    return ack


async def reconnect(client: RawClient, sid: str = "sid-1", msgid: str = "r1") -> dict[str, Any] | None:
    """jambonz's ``session:reconnect`` for ``sid`` on ``client``; returns its ack."""
    await client.send("session:reconnect", msgid, {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
    return await client.receive()


async def receive_command(client: RawClient) -> tuple[str, Any]:
    """The next frame, which must be there: its ``(command, data)``."""
    frame = await client.receive()
    assert frame is not None
    return frame["command"], frame["data"]


async def drain(client: RawClient) -> None:
    """Read until the server closed."""
    while await client.receive() is not None:
        pass


async def inner_enter(nursery: trio.Nursery, cm: Any) -> RawClient:
    """Enter an async context manager (a :func:`raw_client`) for the rest of ``nursery``'s life."""
    entered = trio.Event()
    box: list[RawClient] = []

    async def hold() -> None:
        async with cm as client:
            box.append(client)
            entered.set()
            await trio.sleep_forever()

    nursery.start_soon(hold)
    await entered.wait()
    return box[0]


#: An invalid frame (``data`` is not an object) that carries a msgid: the receive loop stops to
#: write an ack for it, which blocks on a lockstep stream until the peer reads.
BAD_FRAME = '{"type":"verb:hook","msgid":"bad","data":5}'


def hook_frames(client: RawClient, prefix: str, n: int = 3) -> bytes:
    """``n`` ``verb:hook`` frames (msgids ``<prefix>0``...) encoded by ``client``, to send at once."""
    return b"".join(
        client.ws.send(TextMessage(data=msg("verb:hook", f"{prefix}{i}", {}, hook="/h", call_sid="sid-1")))
        for i in range(n)
    )


async def hooks_behind_a_blocked_write(client: RawClient, prefix: str) -> None:
    """Send in one segment a bad frame (its ack blocks: a lockstep peer that is not reading),
    three hooks (``<prefix>0``...) and an abnormal Close (4000: jambonz reconnects)."""
    data = client.ws.send(TextMessage(data=BAD_FRAME)) + hook_frames(client, prefix)
    await client.stream.send_all(data + client.ws.send(CloseConnection(code=4000)))


async def wait_link_closed(call: Call) -> None:
    """Until the call's connection has seen the peer's Close (the receive loop may lag behind)."""
    link = engine_of(call).link
    assert link is not None
    while link.conn.close_reason is None:
        await trio.lowlevel.checkpoint()


async def start_and_drop(
    server: JambonzServer, sid: str = "sid-1", *, hook: str | None = None, delivered: trio.Event | None = None
) -> Call:
    """Start a call on a fresh socket, then drop the socket: the call waits for a reconnect.

    With ``hook``, a ``verb:hook`` (msgid ``h1``) to it is sent first, and the drop waits for
    ``delivered`` (set by the app when it got the hook): the socket dies with the hook unanswered.
    """
    async with raw_client(server) as first:
        await new_call(first, sid)
        if hook is not None:
            await first.send("verb:hook", "h1", {}, hook=hook, call_sid=sid)
        if delivered is not None:
            await delivered.wait()
        await first.drop()
    return server.calls[sid]
